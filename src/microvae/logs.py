"""The warnings that jobs wrote to their logs (printed at the end of a workflow run)."""

from __future__ import annotations

import os
from pathlib import Path


def warnings_of_logs(folder: str | os.PathLike, since: float | None = None
                     ) -> list[tuple[str, str]]:
    """``(log file, line)`` of every WARNING line in the ``*.log`` files under ``folder`` (of
    the files changed at or after ``since``, a timestamp, where given), in file order."""
    found = []
    root = Path(folder)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*.log")):
        if since is not None and path.stat().st_mtime < since:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " WARNING " in line or line.startswith("WARNING"):
                found.append((str(path.relative_to(root)), line.strip()))
    return found
