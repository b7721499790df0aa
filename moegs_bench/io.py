"""Writing files: never seen half-written (temporary file, then rename); 8-bit images."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    Readers never see a half-written file; on failure the temporary file is removed.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def image_to_uint8(img: Tensor) -> np.ndarray:
    """``[..., C]`` float in [0, 1] -> uint8 numpy, rounded to the nearest level."""
    import torch

    return (img.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()
