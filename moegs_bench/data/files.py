"""Why a dataset path cannot be used, in one line (README, "Datasets").

``Path.is_file()`` answers False for a missing file, a symbolic link loop and a dangling link
alike, and raises :class:`PermissionError` when a folder on the way may not be searched. The
loaders ask :func:`file_problem` instead, so that a loop is called a loop, a folder without
permission is named, and nothing but a :class:`~moegs_bench.data.scene.DatasetError` (one line
naming the path) leaves a loader.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from moegs_bench.data.scene import DatasetError

__all__ = ["file_problem", "folder_problem", "is_file", "list_folder", "optional_file", "os_reason", "present",
           "read_problem", "require_file", "require_folder"]


def os_reason(exc: OSError, path: Path | None = None) -> str:
    """What an :class:`OSError` about ``path`` means, in words (no errno number, no repeated path).
    With ``path``, a loop or a permission problem names the component of the path at fault."""
    culprit = _culprit(path, exc.errno) if path is not None else None
    if exc.errno == errno.ELOOP:
        if culprit is not None and culprit != path:
            return f"a symbolic link loop at {culprit}"
        return "a symbolic link loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        if culprit is not None and culprit != path:
            return f"permission denied: the folder {culprit} may not be searched"
        return "permission denied"
    if exc.errno == errno.ENOENT:
        if path is not None and os.path.islink(path):
            return f"a broken symbolic link to {os.readlink(path)}, which does not exist"
        return "missing"
    if exc.errno == errno.ENOTDIR:
        return "missing (a part of its path is a file, not a folder)"
    return exc.strerror or type(exc).__name__


def file_problem(path: Path) -> str | None:
    """None when ``path`` is a regular file (after symbolic links), else why not: ``missing``, a
    loop, a broken link, permission denied on a folder of the path, a folder. Never raises."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return os_reason(exc, Path(path))
    if stat.S_ISDIR(st.st_mode):
        return "a folder, expected a file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def folder_problem(path: Path, *, listed: bool = True) -> str | None:
    """None when ``path`` is a folder (whose entries can be listed, when ``listed``), else why not."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return os_reason(exc, Path(path))
    if not stat.S_ISDIR(st.st_mode):
        return "a file, expected a folder"
    if not listed:
        return None
    try:
        with os.scandir(path) as it:
            next(it, None)
    except OSError as exc:
        return f"cannot list the folder ({os_reason(exc)})"
    return None


def is_file(path: Path) -> bool:
    """``Path.is_file()`` that never raises (a folder without permission on the way: False)."""
    return file_problem(path) is None


def present(path: Path) -> bool:
    """Whether anything is at ``path``: a file, a folder, a broken link or a link loop (a format's
    ``detect`` uses it, so that its loader, not "no known layout", says what is wrong). Never raises."""
    return os.path.lexists(path)


def require_file(path: Path, expected: str) -> None:
    """A DatasetError ``"<path>: <problem>; expected <expected>"`` unless ``path`` is a file we may
    open for reading (it is opened and closed, nothing is read)."""
    problem = file_problem(path)
    if problem is not None:
        raise DatasetError(f"{path}: {problem}; expected {expected}")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({os_reason(exc, Path(path))}); expected {expected}") from None


def require_folder(path: Path, expected: str, *, listed: bool = True) -> None:
    """A DatasetError ``"<path>: <problem>; expected <expected>"`` unless ``path`` is a folder (that
    can be listed, when ``listed``)."""
    problem = folder_problem(path, listed=listed)
    if problem is not None:
        raise DatasetError(f"{path}: {problem}; expected {expected}")


def optional_file(path: Path) -> bool:
    """Whether the optional file ``path`` is there: False when nothing is at ``path``, True for a
    file, a DatasetError for anything else at ``path`` (a loop, a broken link, a folder, no
    permission): a file the user meant to give is never silently ignored."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError:
        pass  # (a folder on the way may not be searched: file_problem says which)
    require_file(path, "a file (it is optional: remove it to go without)")
    return True


def list_folder(path: Path) -> list[os.DirEntry]:
    """The entries of the folder ``path``; a DatasetError naming it when it cannot be listed."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot list the folder ({os_reason(exc, Path(path))})") from None


def read_problem(exc: BaseException, path: Path) -> str:
    """Why reading the file ``path`` failed, in words: an OS error as :func:`os_reason` says it, a
    decoder's complaint as one line without the path repeated."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_reason(exc, Path(path))
    if type(exc).__name__ == "UnidentifiedImageError":  # PIL: no decoder recognises the bytes
        return "not an image file (empty, or an unknown or corrupt header)"
    text = " ".join(str(exc).replace(f"'{path}'", "the file").replace(str(path), "the file").split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _culprit(path: Path | None, code: int | None) -> Path | None:
    """The first component of ``path`` (shortest prefix first) that fails as ``path`` did: the
    loop itself, or, for a permission error, the folder that may not be searched."""
    if path is None or code not in (errno.ELOOP, errno.EACCES, errno.EPERM):
        return None
    parts = Path(os.path.abspath(path)).parts
    prev: Path | None = None
    for i in range(1, len(parts) + 1):
        prefix = Path(*parts[:i])
        try:
            os.stat(prefix)
        except OSError as exc:
            if exc.errno != code:
                return None
            if code == errno.ELOOP:
                return _relative_like(prefix, path)
            return _relative_like(prev, path) if prev is not None else None
        prev = prefix
    return None


def _relative_like(found: Path, path: Path) -> Path:
    """``found`` (absolute) written like ``path`` (relative stays relative)."""
    if Path(path).is_absolute():
        return found
    try:
        return found.relative_to(Path.cwd())
    except ValueError:
        return found
