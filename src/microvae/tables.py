"""CSV tables: rows of numbers and labels written atomically, and read back as numbers."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

from .atomic import write_text


def csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; floats with 6 significant digits, everything else as it is."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]],
              columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` (columns: ``columns``, or the keys of the first row) atomically."""
    write_text(path, csv_text(rows, columns if columns is not None else list(rows[0])))


def read_csv(path: str | os.PathLike, text_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of a CSV file; every column but ``text_columns`` as float."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in row:
            if key not in text_columns:
                row[key] = float(row[key])
    return rows


def columns_text(columns: dict[str, Sequence[float]], digits: int = 8) -> str:
    """CSV of equally long numeric columns (name -> values)."""
    names = list(columns)
    length = len(columns[names[0]])
    lines = [",".join(names)]
    lines += [",".join(f"{columns[c][i]:.{digits}g}" for c in names) for i in range(length)]
    return "\n".join(lines) + "\n"


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A training history (history.csv of the train stage)."""
    return read_csv(path, text_columns=("kl_per_dim", "stop_reason"))
