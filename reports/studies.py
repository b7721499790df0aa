"""The report's tables, built from entries (:mod:`moegs_bench.reports.records`).

Entries are split into groups (``--group-by``: the dataset by default) and each group gives:

- ``main``: every expert, then the main mixture's uniform average and the mixture, then the
  per-pixel oracle (a bound that uses the ground truth, never ranked), averaged over the group's
  scenes, like Tables 1-2 of MoE-GS (Jin et al., arXiv 2510.19210). The main mixture is the one
  with the most experts; among its settings, the one run on the most scenes (the paper's
  volume-aware router first on a tie);
- ``scenes``: the same rows per scene (when the group has several);
- ``regimes``: PSNR per motion regime for the main mixture's models (scenes with region masks);
- ``subsets``: every expert subset mixed with the main settings (best expert, average, mixture,
  its gain over the average, oracle, share of the average-to-oracle gap closed);
- ``router``: the settings a set of experts was mixed with (router variant, temperature, ...);
- ``pruning``: criterion x ratio against the unpruned mixture;
- ``distillation``: student x lam against the same-budget student trained on the ground truth.

Averages over scenes are taken only over complete rows: a row missing a scene prints n/a with a
footnote naming the scenes. With several seeds a cell is mean ± std over seeds (for a dataset
average: of the per-seed averages when every scene has the same seeds, else the mean of the
scenes' means, without a std).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from moegs_bench.reports.records import Entry, newest_last, scene_name
from moegs_bench.reports.table import Cell, Column, Row, Table, cell_of

__all__ = ["GROUP_BY", "METRICS", "Group", "build_tables", "group_entries", "main_mixture", "main_runs"]

METRICS: dict[str, Column] = {
    "psnr": Column("psnr", "PSNR", "dB", +1, 2),
    "ssim": Column("ssim", "SSIM", "", +1, 3),
    "lpips": Column("lpips", "LPIPS", "", -1, 3),
    "fps": Column("fps", "FPS", "", +1, 1),
    "storage_mb": Column("storage_mb", "Storage", "MB", -1, 2),
    "train_s": Column("train_s", "Train", "min", -1, 1),
    "num_gaussians": Column("num_gaussians", "Gaussians", "", 0, 0),
}
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "fps", "storage_mb", "train_s")
QUALITY = ("psnr", "ssim", "lpips")
GROUP_BY: dict[str, Callable[[Entry], str]] = {
    "dataset": lambda e: e.dataset,
    "scene": lambda e: e.scene,
    "profile": lambda e: str(e.setting("profile", "")),
}
ORACLE_LABEL = "Oracle (per-pixel, uses GT)"
AVERAGE_LABEL = "Average (uniform, no router)"
PAPER_VARIANT = "volume-aware"
NOT_APPLICABLE = ("fps", "storage_mb", "train_s", "num_gaussians")
DASH_NOTE = "--: does not apply (the average and the oracle are computed from the experts' renders)."
TRAIN_NOTE = "Train: wall-clock minutes; a mixture's includes its experts' training and the router's."


@dataclass
class Group:
    """The entries of one group and its name (``synthetic``, ``synthetic:kitchen``, ...)."""

    name: str
    entries: list[Entry]

    @property
    def scenes(self) -> list[str]:
        return sorted({e.scene for e in self.entries})


def group_entries(entries: Sequence[Entry], by: str) -> list[Group]:
    key = GROUP_BY[by]
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(key(e), []).append(e)
    return [Group(name or "all", groups[name]) for name in sorted(groups)]


# ----------------------------------------------------------------------------------- values


def value(entry: Entry, key: str, lpips_metric: str | None = None) -> tuple[float | None, str | None]:
    """``(figure, why it is missing)`` of an entry; train time in minutes; an LPIPS of another kind
    than the table's (``lpips_metric``) is missing."""
    if key == "lpips":
        if entry.lpips is None:
            return None, f"LPIPS not computed: {entry.lpips_reason}" if entry.lpips_reason else "LPIPS not recorded"
        if lpips_metric is not None and entry.lpips_metric != lpips_metric:
            return None, f"LPIPS measured as {entry.lpips_metric}, not this table's {lpips_metric}"
        return entry.lpips, None
    if entry.role in ("average", "oracle") and key in NOT_APPLICABLE:
        return None, None  # (computed from the experts' renders: no model of its own)
    v = entry.metric(key)
    if v is None:
        return None, f"{METRICS[key].header if key in METRICS else key} not recorded for {entry.model}"
    if key == "train_s":
        v /= 60.0
    return v, None


def aggregate(by_scene: dict[str, dict[int, Entry]], scenes: Sequence[str],
              get: Callable[[Entry], tuple[float | None, str | None]], *, signed: bool = False) -> Cell:
    """One cell over ``scenes`` (see module doc): ``by_scene[scene][seed]`` -> entry."""
    missing = [s for s in scenes if not by_scene.get(s)]
    if missing:
        return Cell(None, note="not run on " + ", ".join(scene_name(s) for s in missing))
    per: dict[str, dict[int, float]] = {}
    for scene in scenes:
        per[scene] = {}
        for seed, entry in by_scene[scene].items():
            v, why = get(entry)
            if v is None:
                return Cell(None, note=why)
            per[scene][seed] = v
    if len(scenes) == 1:
        return cell_of(list(per[scenes[0]].values()), signed=signed)
    seeds = {frozenset(p) for p in per.values()}
    if len(seeds) == 1:  # every scene has the same seeds: mean ± std of the per-seed averages
        return cell_of([sum(per[s][seed] for s in scenes) / len(scenes) for seed in sorted(next(iter(seeds)))],
                       signed=signed)
    means = [sum(p.values()) / len(p) for p in per.values()]  # (else: the mean of the scenes' means)
    return Cell(sum(means) / len(means), signed=signed)


def _index(entries: Sequence[Entry]) -> dict[str, dict[int, Entry]]:
    """``[scene][seed] -> entry``; of two results of one configuration, the newest."""
    out: dict[str, dict[int, Entry]] = {}
    for e in sorted(entries, key=newest_last):
        out.setdefault(e.scene, {})[e.seed] = e
    return out


def _lpips_metric(entries: Sequence[Entry]) -> str | None:
    kinds = Counter(e.lpips_metric for e in entries if e.lpips_metric)
    return sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if kinds else None


def _columns(metrics: Sequence[str], lpips_metric: str | None, group: str = "", prefix: str = "") -> list[Column]:
    cols = []
    for m in metrics:
        col = METRICS[m]
        header = col.header + (f" ({_lpips_name(lpips_metric)})" if m == "lpips" and lpips_metric else "")
        cols.append(Column(prefix + m, header, col.unit, col.direction, col.digits, group))
    return cols


def _lpips_name(metric: str) -> str:
    return {"lpips_alex_v0.1": "Alex", "lpips_vgg_v0.1": "VGG"}.get(metric, metric)


# ---------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """Entries of one method across scenes and seeds, under one row label."""

    label: str
    entries: tuple[Entry, ...]
    bound: bool = False
    rule_before: bool = False


def main_mixture(entries: Sequence[Entry]) -> tuple[tuple[str, ...], tuple] | None:
    """``(experts, settings)`` of the group's main mixture (see module doc), None without mixtures."""
    runs: dict[tuple, set[str]] = {}
    for e in entries:
        if e.role == "mixture":
            runs.setdefault((e.experts, e.settings), set()).add(e.scene)
    if not runs:
        return None

    def rank(key: tuple) -> tuple:
        experts, settings = key
        return (-len(experts), -len(runs[key]), dict(settings).get("router.variant") != PAPER_VARIANT,
                experts, repr(settings))

    return min(runs, key=rank)


def main_runs(group: Group) -> list[Entry]:
    """The main mixture's entries the group's tables use: per scene and seed, the newest."""
    main = main_mixture(group.entries)
    if main is None:
        return []
    return [e for by_seed in _index(_of(group.entries, "mixture", *main)).values() for e in by_seed.values()]


def _of(entries: Sequence[Entry], role: str, experts: tuple[str, ...], settings: tuple) -> tuple[Entry, ...]:
    return tuple(e for e in entries if e.role == role and e.experts == experts and e.settings == settings)


def _expert_methods(entries: Sequence[Entry], mixtures: Sequence[Entry]) -> list[Method]:
    """One row per expert id (and profile, when several): per scene and seed, the expert a
    ``mixtures`` run was built from (its record in that run folder), else the newest."""
    experts = [e for e in entries if e.role == "expert"]
    profiles = {e.setting("profile") for e in experts}
    out = []
    for model, profile in sorted({(e.model, e.setting("profile")) for e in experts}, key=lambda k: (k[0], str(k[1]))):
        chosen = []
        for scene, seed in sorted({(e.scene, e.seed) for e in experts if e.model == model}):
            runs = [m.run_dir for m in mixtures if (m.scene, m.seed) == (scene, seed)]
            found = expert_for(experts, model, scene, seed, runs, profile=profile)
            if found is not None:
                chosen.append(found)
        label = model + (f" ({profile})" if len(profiles) > 1 else "")
        out.append(Method(label, tuple(chosen)))
    return out


def expert_for(entries: Sequence[Entry], expert: str, scene: str, seed: int, run_dirs: Sequence[Any] = (), *,
               profile: Any = None) -> Entry | None:
    """The expert entry ``expert`` on ``scene`` and ``seed``: the one recorded in one of
    ``run_dirs`` (the mixture runs it belongs to) if any, else the newest."""
    found = sorted((e for e in entries if e.role == "expert" and e.model == expert and e.scene == scene
                    and e.seed == seed and (profile is None or e.setting("profile") == profile)), key=newest_last)
    linked = [e for e in found if any(d in run_dirs for d in (e.run_dirs or (e.run_dir,)))]
    return (linked or found or [None])[-1]


def _table_rows(methods: Sequence[Method], columns: Sequence[Column], scenes_of: Callable[[Column], Sequence[str]],
                lpips_metric: str | None) -> list[Row]:
    rows = []
    for m in methods:
        idx = _index(m.entries)
        cells = {col.key: aggregate(idx, scenes_of(col), lambda e, k=col.key.split("/")[-1]: value(e, k, lpips_metric))
                 for col in columns}
        rows.append(Row(m.label, cells, ranked=not m.bound, bound=m.bound, rule_before=m.rule_before))
    return rows


# ----------------------------------------------------------------------------------- tables


def build_tables(groups: Sequence[Group], metrics: Sequence[str] = DEFAULT_METRICS) -> list[Table]:
    """Every table the groups give, in report order."""
    tables: list[Table] = []
    for g in groups:
        tables += [t for t in (_main(g, metrics), _scenes(g, metrics), _regimes(g), _subsets(g)) if t is not None]
        tables += _router(g, metrics)
        tables += _pruning(g, metrics)
        tables += _distillation(g, metrics)
    return tables


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "all"


def _where(g: Group, scenes: Sequence[str] | None = None) -> str:
    scenes = g.scenes if scenes is None else scenes
    names = ", ".join(scene_name(s) for s in scenes)
    return f"{g.name} ({len(scenes)} scene{'s' if len(scenes) != 1 else ''}: {names})"


def _common_scenes(rows: Sequence[Sequence[Entry]]) -> list[str]:
    """The scenes every (non-empty) row of an ablation ran on; all of them when none is common."""
    sets = [{e.scene for e in row} for row in rows if row]
    common = set.intersection(*sets) if sets else set()
    return sorted(common or set().union(*sets))


def _main_methods(g: Group) -> tuple[list[Method], str]:
    main = main_mixture(g.entries)
    methods = _expert_methods(g.entries, main_runs(g))  # (the experts the table's mixtures were built from)
    text = ""
    if main is not None:
        experts, settings = main
        text = f" MoE-GS mixes {', '.join(experts)}{_settings_text(settings)}."
        methods += [Method(AVERAGE_LABEL, _of(g.entries, "average", experts, settings), rule_before=True),
                    Method("MoE-GS", _of(g.entries, "mixture", experts, settings)),
                    Method(ORACLE_LABEL, _of(g.entries, "oracle", experts, settings), bound=True, rule_before=True)]
    return [m for m in methods if m.entries], text


def _settings_text(settings: tuple) -> str:
    d = dict(settings)
    parts = [f"router {d['router.variant']}"] if "router.variant" in d else []
    if "router.iterations" in d:
        parts.append(f"{d['router.iterations']} router steps")
    if d.get("profile"):
        parts.append(f"profile {d['profile']}")
    return f" ({', '.join(parts)})" if parts else ""


_ORACLE_NOTE = ("The oracle picks the best expert per pixel using the ground truth: an upper bound of any "
                "per-pixel blend of these experts, not a method (not ranked).")


def _main(g: Group, metrics: Sequence[str]) -> Table | None:
    methods, text = _main_methods(g)
    if not methods:
        return None
    lp = _lpips_metric([e for m in methods for e in m.entries])
    cols = _columns(metrics, lp)
    rows = _table_rows(methods, cols, lambda c: g.scenes, lp)
    seeds = sorted({e.seed for m in methods for e in m.entries})
    avg = "averaged over" if len(g.scenes) > 1 else "on"
    caption = (f"Experts and the mixture {avg} {_where(g)}.{text} Best in bold, second underlined"
               f"{'; mean ± std over seeds ' + ', '.join(map(str, seeds)) if len(seeds) > 1 else ''}.")
    return Table(f"main_{_slug(g.name)}", f"Main comparison, {g.name}", caption, "Method", cols, rows,
                 _notes(methods, rows, cols))


def _scenes(g: Group, metrics: Sequence[str]) -> Table | None:
    if len(g.scenes) < 2:
        return None
    methods, text = _main_methods(g)
    quality = [m for m in metrics if m in QUALITY] or ["psnr"]
    lp = _lpips_metric([e for m in methods for e in m.entries])
    cols = [Column(f"{scene}/{c.key}", c.header, c.unit, c.direction, c.digits, scene_name(scene))
            for scene in g.scenes for c in _columns(quality, lp)]
    rows = _table_rows(methods, cols, lambda c: [c.key.rsplit("/", 1)[0]], lp)
    caption = f"Per scene, {_where(g)}.{text} Best in bold, second underlined per column."
    return Table(f"scenes_{_slug(g.name)}", f"Per-scene results, {g.name}", caption, "Method", cols, rows,
                 _notes(methods, rows, cols))


def _notes(methods: Sequence[Method], rows: Sequence[Row], cols: Sequence[Column]) -> list[str]:
    """The sentences under a table of methods: what "--" means, the train time, the oracle."""
    notes = []
    if any(c.missing and not c.note for r in rows for c in r.cells.values()):
        notes.append(DASH_NOTE)
    if any(c.key.endswith("train_s") for c in cols):
        notes.append(TRAIN_NOTE)
    if any(m.bound for m in methods):
        notes.append(_ORACLE_NOTE)
    return notes


def _regimes(g: Group) -> Table | None:
    main = main_mixture(g.entries)
    if main is None:
        return None
    mixtures = [e for e in _of(g.entries, "mixture", *main) if e.regions]
    if not mixtures:
        return None
    labels = sorted({r for e in mixtures for r in e.regions}, key=_regime_order)
    models = list(main[0]) + ["average", "mixture", "oracle"]
    names = {"average": AVERAGE_LABEL, "mixture": "MoE-GS", "oracle": ORACLE_LABEL}
    cols = [Column(r, r, "dB", +1, 2) for r in labels]
    rows = []
    for model in models:
        cells = {}
        for r in labels:
            vals = [((e.regions.get(r) or {}).get("psnr") or {}).get(model) for e in mixtures]
            ok = [v for v in vals if v is not None and math.isfinite(v)]
            cells[r] = (Cell(sum(ok) / len(ok)) if len(ok) == len(vals) and ok
                        else Cell(None, note=f"regime {r} is not in every scene's masks"))
        rows.append(Row(names.get(model, model), cells, ranked=model != "oracle", bound=model == "oracle",
                        rule_before=model in ("average", "oracle")))
    shares = [f"{r}: " + ", ".join(f"{x} {_mean_share(mixtures, r, x):.2f}" for x in main[0]) for r in labels]
    scenes = ", ".join(sorted({scene_name(e.scene) for e in mixtures}))
    caption = (f"PSNR (dB) per motion regime, MoE-GS over {', '.join(main[0])}, averaged over {scenes} "
               f"(the synthetic scenes' region masks). Best in bold, second underlined per regime.")
    notes = ["Mean gate weight per expert: " + "; ".join(shares) + "."]
    if all(all("win_share" in (e.regions.get(r) or {}) for r in labels if r in e.regions) for e in mixtures):
        wins = [f"{r}: " + ", ".join(f"{x} {_mean_share(mixtures, r, x, 'win_share'):.2f}" for x in main[0])
                for r in labels]
        notes.append("Share of pixels won (largest gate) per expert: " + "; ".join(wins) + ".")
    notes.append(_ORACLE_NOTE)
    return Table(f"regimes_{_slug(g.name)}", f"Per-regime PSNR, {g.name}", caption, "Model", cols, rows, notes)


_REGIME_ORDER = ("static", "rigid", "oscillating", "appearance", "topology")


def _regime_order(label: str) -> tuple:
    return (_REGIME_ORDER.index(label) if label in _REGIME_ORDER else len(_REGIME_ORDER), label)


def _mean_share(mixtures: Sequence[Entry], regime: str, expert: str, key: str = "gate_share") -> float:
    """The mean over the runs that have ``regime`` of an expert's ``key`` share there."""
    vals = [((e.regions.get(regime) or {}).get(key) or {}).get(expert, 0.0) for e in mixtures if regime in e.regions]
    return sum(vals) / len(vals)


def _subsets(g: Group) -> Table | None:
    main = main_mixture(g.entries)
    if main is None:
        return None
    settings = main[1]
    sets = sorted({e.experts for e in g.entries if e.role == "mixture" and e.settings == settings},
                  key=lambda s: (len(s), s))
    if len(sets) < 2:
        return None
    cols = [Column("k", "K", "", 0, 0), Column("best", "Best expert", "dB", 0, 2),
            Column("average", "Average", "dB", +1, 2), Column("mixture", "MoE-GS", "dB", +1, 2),
            Column("gain", "MoE-GS − Average", "dB", +1, 2), Column("oracle", "Oracle", "dB", 0, 2),
            Column("closed", "Gap closed", "%", +1, 0)]
    scenes = _common_scenes([_of(g.entries, "mixture", x, settings) for x in sets])
    rows = []
    for s in sets:
        mix, avg, orc = (_index(_of(g.entries, r, s, settings)) for r in ("mixture", "average", "oracle"))

        def best(e: Entry, s: tuple[str, ...] = s) -> tuple[float | None, str | None]:
            vals = [expert_for(g.entries, x, e.scene, e.seed, [e.run_dir]) for x in s]
            if any(v is None or v.psnr is None for v in vals):
                return None, "an expert's record is missing"
            return max(v.psnr for v in vals), None

        def other(e: Entry, idx: dict, how: Callable[[float, float], float]) -> tuple[float | None, str | None]:
            o = idx.get(e.scene, {}).get(e.seed)
            if o is None or o.psnr is None or e.psnr is None:
                return None, "the mixture record has no baselines"
            return how(e.psnr, o.psnr), None

        def closed(e: Entry) -> tuple[float | None, str | None]:
            a, o = avg.get(e.scene, {}).get(e.seed), orc.get(e.scene, {}).get(e.seed)
            if a is None or o is None or e.psnr is None or o.psnr - a.psnr <= 0:
                return None, "no average-to-oracle gap recorded"
            return 100.0 * (e.psnr - a.psnr) / (o.psnr - a.psnr), None

        cells = {"k": Cell(float(len(s))),
                 "best": aggregate(mix, scenes, best),
                 "average": aggregate(avg, scenes, lambda e: value(e, "psnr")),
                 "mixture": aggregate(mix, scenes, lambda e: value(e, "psnr")),
                 "gain": aggregate(mix, scenes, lambda e: other(e, avg, lambda m, a: m - a), signed=True),
                 "oracle": aggregate(orc, scenes, lambda e: value(e, "psnr")),
                 "closed": aggregate(mix, scenes, closed)}
        rows.append(Row(" + ".join(s), cells))
    caption = (f"Expert subsets, {_where(g, scenes)}: test PSNR (dB) of the best single expert, the uniform average "
               f"of the subset's renders, MoE-GS{_settings_text(settings)}, the router's gain over the average, "
               f"the per-pixel oracle (uses GT; not ranked) and the share of the average-to-oracle gap MoE-GS closes.")
    return Table(f"subsets_{_slug(g.name)}", f"Expert subsets, {g.name}", caption, "Experts", cols, rows)


def _changes(settings: tuple, reference: tuple) -> str:
    """``settings`` as its changes from ``reference`` (``variant=pixel, temperature=0.1``)."""
    a, b = dict(settings), dict(reference)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k.removeprefix('router.')}={_v(a.get(k))}" for k in keys) or "reference"


def _v(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, tuple):
        return "+".join(map(str, x))
    return "none" if x is None else str(x)


def _router(g: Group, metrics: Sequence[str]) -> list[Table]:
    out = []
    by: dict[tuple[str, ...], set[tuple]] = {}
    for e in g.entries:
        if e.role == "mixture":
            by.setdefault(e.experts, set()).add(e.settings)
    main = main_mixture(g.entries)
    for experts in sorted(by):
        variants = sorted(by[experts], key=repr)
        if len(variants) < 2:
            continue
        reference = main[1] if main is not None and main[1] in variants else variants[0]
        variants.remove(reference)
        variants.insert(0, reference)
        methods = [Method("Average (no router)", _of(g.entries, "average", experts, reference))]
        methods += [Method(_changes(v, reference), _of(g.entries, "mixture", experts, v)) for v in variants]
        quality = [m for m in metrics if m in (*QUALITY, "fps")]
        lp = _lpips_metric([e for m in methods for e in m.entries])
        cols = _columns(quality, lp)
        scenes = _common_scenes([m.entries for m in methods[1:]])
        rows = _table_rows(methods, cols, lambda c: scenes, lp)
        caption = (f"Router settings, MoE-GS over {', '.join(experts)}, {_where(g, scenes)}: the experts' uniform "
                   f"average (no router), the reference settings{_settings_text(reference)} and each setting changed "
                   f"from them. Best in bold, second underlined.")
        out.append(Table(f"router_{_slug(g.name)}_{_slug('+'.join(experts))}", f"Router settings, {g.name}",
                         caption, "Setting", cols, rows))
    return out


def _pruning(g: Group, metrics: Sequence[str]) -> list[Table]:
    out = []
    pruned = [e for e in g.entries if e.role == "pruned"]
    bases: dict[tuple, list[Entry]] = {}
    for e in pruned:
        base = tuple((k, v) for k, v in e.settings if not k.startswith("prune."))
        bases.setdefault((e.experts, base), []).append(e)
    for (experts, base), es in sorted(bases.items(), key=lambda kv: repr(kv[0])):
        variants = sorted({e.settings for e in es}, key=lambda s: (str(dict(s).get("prune.criterion")),
                                                                   float(dict(s).get("prune.ratio") or 0),
                                                                   float(dict(s).get("prune.threshold") or 0), repr(s)))
        source = _of(g.entries, "mixture", experts, base)
        methods = [Method("unpruned", source)] if source else []
        others = sorted({k for v in variants for k in dict(v)} - {"prune.criterion", "prune.ratio", "prune.threshold"})
        others = [k for k in others if len({repr(dict(v).get(k)) for v in variants}) > 1]  # (what else varies)
        for k, v in enumerate(variants):
            d = dict(v)
            amount = (f"ratio {d['prune.ratio']:g}" if d.get("prune.ratio") is not None
                      else f"threshold {_v(d.get('prune.threshold'))}")
            rest = ", ".join(f"{x.removeprefix('prune.')}={_v(d.get(x))}" for x in others)
            methods.append(Method(f"{d.get('prune.criterion')}, {amount}" + (f" ({rest})" if rest else ""),
                                  _of(es, "pruned", experts, v), rule_before=k == 0))
        keys = [m for m in ("psnr", "ssim", "lpips", "fps", "storage_mb", "num_gaussians") if m in metrics or
                m in ("psnr", "fps", "storage_mb", "num_gaussians")]
        lp = _lpips_metric([e for m in methods for e in m.entries])
        cols = _columns(keys, lp)
        scenes = _common_scenes([m.entries for m in methods])
        rows = _table_rows(methods, cols, lambda c: scenes, lp)
        src = {(e.scene, e.seed): e.psnr for e in source}
        cols.append(Column("delta", "ΔPSNR", "dB", +1, 2))
        for m, row in zip(methods, rows):
            row.cells["delta"] = aggregate(_index(m.entries), scenes, lambda e: (
                (None, None) if e.role == "mixture"  # (the reference itself: "--")
                else (e.psnr - src[(e.scene, e.seed)], None) if (e.scene, e.seed) in src and e.psnr is not None
                else (None, "the unpruned run is not among the sources")), signed=True)
        caption = (f"Gate-aware pruning of MoE-GS over {', '.join(experts)}, {_where(g, scenes)}: criterion and share of "
                   f"each expert's Gaussians removed; ΔPSNR against the unpruned mixture.")
        out.append(Table(f"pruning_{_slug(g.name)}_{_slug('+'.join(experts))}", f"Pruning, {g.name}", caption,
                         "Criterion, amount", cols, rows, ["--: the unpruned mixture itself."] if source else []))
    return out


def _distillation(g: Group, metrics: Sequence[str]) -> list[Table]:
    """One block per student and budget (steps, from scratch): its ground-truth-only baseline, then
    each lam; each block averages over the scenes all its rows ran on."""
    students = [e for e in g.entries if e.role in ("distilled", "distill-baseline")]
    if not students:
        return []

    def budget(e: Entry) -> tuple:
        return (e.experts[0], e.setting("distill.steps"), e.setting("distill.from_scratch"))

    keys = [m for m in ("psnr", "ssim", "lpips", "fps", "storage_mb") if m in metrics or m == "psnr"]
    lp = _lpips_metric(students)
    cols = [replace(c, direction=0) for c in _columns(keys, lp)]  # (blocks differ in scenes: rank the gain only)
    cols.append(Column("gain", "Gain over GT only", "dB", +1, 2))
    base_psnr = {(budget(e), e.scene, e.seed): e.psnr for e in students if e.role == "distill-baseline"}

    def gain(e: Entry) -> tuple[float | None, str | None]:
        if e.role == "distill-baseline":
            return None, None  # (the reference itself: "--")
        base = base_psnr.get((budget(e), e.scene, e.seed))
        if base is None or e.psnr is None:
            return None, "no same-budget ground-truth baseline among the sources"
        return e.psnr - base, None

    rows: list[Row] = []
    for b in sorted({budget(e) for e in students}, key=repr):
        student, steps, scratch = b
        block = [Method("ground truth only", tuple(e for e in students if e.role == "distill-baseline"
                                                   and budget(e) == b))]
        lams = sorted({e.setting("distill.lam") for e in students if e.role == "distilled" and budget(e) == b},
                      key=float)
        block += [Method(f"lam {lam:g}", tuple(e for e in students if e.role == "distilled" and budget(e) == b
                                               and e.setting("distill.lam") == lam)) for lam in lams]
        block = [m for m in block if m.entries]
        scenes = _common_scenes([m.entries for m in block])
        how = f"{steps} steps{' from scratch' if scratch else ''}, {len(scenes)} scene{'s' * (len(scenes) != 1)}"
        for k, m in enumerate(block):
            cells = {c.key: aggregate(_index(m.entries), scenes, lambda e, key=c.key: value(e, key, lp))
                     for c in cols if c.key != "gain"}
            cells["gain"] = aggregate(_index(m.entries), scenes, gain, signed=True)
            rows.append(Row(f"{student}, {m.label} ({how})", cells, rule_before=k == 0 and bool(rows)))
    names = ", ".join(sorted({scene_name(e.scene) for e in students}))
    caption = (f"Distillation into one expert, {g.name} ({names}): the student trained on the mixture's renders "
               f"with weight lam on the ground truth where its gate is high (MoE-GS, Eq. 11), against the same "
               f"student trained for the same steps on the ground truth alone. Each block (student, steps) averages "
               f"over the scenes all its rows ran on. Best gain in bold, second underlined.")
    return [Table(f"distillation_{_slug(g.name)}", f"Distillation, {g.name}", caption, "Student", cols, rows,
                  ["--: the baseline itself."])]
