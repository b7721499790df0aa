"""The PLY files 3D Gaussian splatting code bases save: one ``vertex`` element of scalar
properties (graphdeco-inria/gaussian-splatting ``GaussianModel.save_ply`` and its descendants),
read and written with plyfile. Errors are one-line :class:`PlyError` messages naming the file and
what was wrong (a truncated body, a header that is not PLY, no vertex element)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyListProperty, PlyParseError

from moegs_bench.errors import UserInputError
from moegs_bench.io import atomic_write


class PlyError(UserInputError):
    """A file that is not a readable PLY of vertices."""


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex properties of the PLY at ``path``: name -> ``[N]`` array, in file order."""
    path = Path(path)
    if not path.is_file():
        raise PlyError(f"{path}: no such file")
    try:
        data = PlyData.read(str(path))
    except PlyParseError as e:
        raise PlyError(f"{path}: not a readable PLY file ({e})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PlyError(f"{path}: not a readable PLY file ({type(e).__name__}: {e})") from None
    if "vertex" not in [el.name for el in data.elements]:
        raise PlyError(f"{path}: no vertex element")
    vertex = data["vertex"]
    lists = [p.name for p in vertex.properties if isinstance(p, PlyListProperty)]
    if lists:
        raise PlyError(f"{path}: vertex properties {', '.join(lists)} are lists; expected scalars")
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


def write_ply(path: Path, columns: Mapping[str, np.ndarray], *, comments: Sequence[str] = ()) -> None:
    """Write ``columns`` (name -> ``[N]`` array, in order) as a binary little-endian vertex PLY,
    atomically. Floating-point columns are written as float32 (what 3DGS viewers read); integer
    columns keep their type."""
    arrays = {name: np.asarray(a) for name, a in columns.items()}
    if not arrays:
        raise ValueError("write_ply: no columns")
    n = next(iter(arrays.values())).shape[0]
    fields = []
    for name, a in arrays.items():
        if a.shape != (n,):
            raise ValueError(f"write_ply: column {name!r} has shape {a.shape}, expected ({n},)")
        fields.append((name, "<f4" if a.dtype.kind == "f" else a.dtype.newbyteorder("<").str))
    rows = np.empty(n, dtype=np.dtype(fields))
    for name, a in arrays.items():
        rows[name] = a
    text = [c.encode("ascii", errors="replace").decode("ascii") for c in comments]
    ply = PlyData([PlyElement.describe(rows, "vertex")], text=False, byte_order="<", comments=text)
    atomic_write(Path(path), lambda p: ply.write(str(p)))
