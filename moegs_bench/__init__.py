"""moegs-bench: benchmark and ablation toolkit for MoE-GS.

Importing the package is cheap: torch and the heavy modules load only when used, and
``__version__`` (the installed distribution's version, from its metadata) is read when asked for.
"""

from __future__ import annotations

import functools

_DISTRIBUTION = "moegs-bench"
_UNKNOWN_VERSION = "0+unknown"  # the sources used without being installed (no distribution metadata)


@functools.lru_cache(maxsize=1)
def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _UNKNOWN_VERSION


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
