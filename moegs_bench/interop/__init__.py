"""Interoperability with the experts' own code bases: importing the models they save
(``moegs-bench import``) and exporting ours as standard 3DGS PLY (``moegs-bench export-ply``).

Each format lives in its own module and is looked up by name in :data:`FORMATS` (imported on
first use, so ``--help`` stays fast)."""

from __future__ import annotations

import importlib

from moegs_bench.interop.base import Importer, UpstreamError

#: format name -> "module:Class" of its importer.
FORMATS: dict[str, str] = {
    "4dgaussians": "moegs_bench.interop.fourdgaussians:FourDGaussiansImporter",
    "e-d3dgs": "moegs_bench.interop.ed3dgs:ED3DGSImporter",
    "ex4dgs": "moegs_bench.interop.ex4dgs:Ex4DGSImporter",
    "stg": "moegs_bench.interop.stg:STGImporter",
}


def get_importer(name: str) -> Importer:
    """The importer of format ``name`` (one of :data:`FORMATS`)."""
    if name not in FORMATS:
        raise UpstreamError(f"FORMAT {name!r}: unknown; expected one of {', '.join(FORMATS)}")
    module, _, cls = FORMATS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
