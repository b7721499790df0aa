"""What every fixture script checks first: the upstream checkout is at the pinned commit (its
``UPSTREAM_COMMIT`` file, written when the files were exported from a mirror, else ``git rev-parse``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def checkout_commit(checkout: Path) -> str:
    marker = checkout / "UPSTREAM_COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def require_commit(checkout: Path, repo: str, commit: str) -> None:
    """Exit with a message unless ``checkout`` is ``repo`` at ``commit``."""
    found = checkout_commit(checkout)
    if found != commit:
        sys.exit(f"{checkout}: at commit {found}, expected {repo} at {commit}")
