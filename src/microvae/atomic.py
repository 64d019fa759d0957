"""Atomic file output: write to a temporary name in the same folder, rename when complete.

A crash at any moment leaves either the old file or the new one, never a partial file
that a later run would trust.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import MicrovaeError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed and the existing ``path``, if any,
    is left untouched. A full disk becomes a :class:`MicrovaeError` naming the file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    # The temporary name keeps the final suffix: some writers pick the format from it.
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise MicrovaeError(f"{final}: the writer produced no file")
        os.replace(tmp, final)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MicrovaeError(f"{final}: no space left on the device while writing; "
                                "nothing was written, free some space and re-run") from exc
        raise
    except BaseException:
        _remove_quietly(tmp)
        raise


def remove_stale_temporaries(final: Path) -> None:
    """Delete temporary files of ``final`` left by writers that were killed (dead PIDs)."""
    for tmp in final.parent.glob(f".{glob.escape(final.name)}.*.tmp{glob.escape(final.suffix)}"):
        try:
            pid = int(tmp.name[len(final.name) + 2:].split(".", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            _remove_quietly(tmp)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
