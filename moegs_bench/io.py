"""Writing files: never seen half-written (temporary file, then rename); 8-bit images."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor


#: Names of the temporary files of :func:`atomic_write`: ``.<stem>-<8 random>.tmp<suffix>``, and
#: ``.<stem>-<8 random><suffix>`` as written by moegs-bench before 0.1 marked them ``.tmp``.
TEMP_NAME = re.compile(r"^\.[^/]+-[a-z0-9_]{8}(\.tmp)?(\.[A-Za-z0-9]+)?$")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    Readers never see a half-written file; on failure the temporary file is removed. A process
    killed during the write (SIGKILL, power loss) leaves the temporary file (named as
    :data:`TEMP_NAME`); :func:`remove_stale_temps` removes those when the folder is next claimed.
    The suffix is kept last, for writers that choose the format by it (``np.save``, image writers).
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path, *, older_than: float | None = None) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` left in ``folder`` and its subfolders by
    a killed process. Without ``older_than``, only call it while no other process can be writing
    there (the folder's lock is held: :mod:`moegs_bench.locks`); in a folder shared without a lock
    (the decoded-image cache), pass ``older_than`` (seconds since the last change): only files
    nobody has written to for that long go. Returns what was removed."""
    removed = []
    now = time.time()
    for sub, _, files in os.walk(folder):
        for name in files:
            if not TEMP_NAME.match(name):
                continue
            path = Path(sub) / name
            try:
                if older_than is not None and now - path.stat().st_mtime < older_than:
                    continue
                path.unlink()
            except FileNotFoundError:  # (another process removed it)
                continue
            removed.append(path)
    return removed


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def image_to_uint8(img: Tensor) -> np.ndarray:
    """``[..., C]`` float in [0, 1] -> uint8 numpy, rounded to the nearest level."""
    import torch

    return (img.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
