"""Real operating-system limits for tests: a read-only folder and a full disk.

Both use a private mount namespace (``unshare -m``, root only): a read-only bind mount gives the
kernel's own EROFS, a small tmpfs its own ENOSPC. Nothing is simulated and nothing outside the
namespace changes. Tests skip with the reason where namespaces are not available.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from test_cli import ENTRY


@functools.cache
def mounts_unavailable() -> str | None:
    """Why mount namespaces cannot be used here (None when they can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        proc = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                              capture_output=True, text=True, timeout=30)
    except OSError as e:
        return f"unshare -m failed: {e}"
    if proc.returncode != 0:
        return f"no mount namespaces for this user (unshare -m: {proc.stderr.strip() or proc.returncode})"
    return None


def cli_command(*args: str) -> str:
    """The shell words that run moegs-bench with ``args`` in a fresh interpreter."""
    return shlex.join([sys.executable, "-c", ENTRY, *args])


def run_in_namespace(setup: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``setup`` (mount commands) then ``command`` in a private mount namespace."""
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    script = f"set -e; {setup}; set +e; {command}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=timeout)


def read_only(folder: Path) -> str:
    """Setup words: ``folder`` (existing) becomes a read-only bind mount of itself."""
    q = shlex.quote(str(folder))
    return f"mount --bind {q} {q} && mount -o remount,ro,bind {q} {q}"


def small_disk(folder: Path, size: str) -> str:
    """Setup words: an empty tmpfs of ``size`` (e.g. ``2m``) is mounted on ``folder`` (existing)."""
    return f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(folder))}"
