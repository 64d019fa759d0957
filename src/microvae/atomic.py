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
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(final, exc) from exc
    if not os.access(final.parent, os.W_OK):  # writers (h5py) word this error in their own ways
        raise write_error(final, PermissionError(errno.EACCES, "not writable", str(final.parent)))
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
        raise write_error(final, exc) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise


WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device while writing; nothing was written, free some "
                  "space and re-run",
    errno.EDQUOT: "disk quota exceeded while writing; nothing was written, free some space and "
                  "re-run",
    errno.EACCES: "permission denied: cannot write there; make the folder writable or run in "
                  "another working directory",
    errno.EPERM: "operation not permitted: cannot write there; make the folder writable or run "
                 "in another working directory",
    errno.EROFS: "the file system is read-only; run in a writable working directory",
}


def write_error(final: Path, exc: OSError) -> OSError | MicrovaeError:
    """A full disk, a quota, a permission or a read-only file system as a :class:`MicrovaeError`
    naming the file that was to be written (never its temporary name); other errors as they
    are."""
    if exc.errno in WRITE_ERRORS:
        return MicrovaeError(f"{final}: {WRITE_ERRORS[exc.errno]}")
    return exc


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
    with contextlib.suppress(OSError):  # gone already, or in a folder this user cannot change
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
