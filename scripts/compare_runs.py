"""Compare the results of two runs of the workflow (e.g. before and after a refactoring):
dataset.h5 (every array and attribute), the weights of every model, every samples.h5 array,
metrics.json and summary.csv. Prints each comparison and exits 1 if anything differs.

    python scripts/compare_runs.py /path/to/old/results /path/to/new/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch


def h5_differences(a: Path, b: Path) -> list[str]:
    out = []
    with h5py.File(a) as x, h5py.File(b) as y:
        names_x, names_y = [], []
        x.visit(names_x.append)
        y.visit(names_y.append)
        if names_x != names_y:
            out.append(f"{a.name}: different contents {sorted(set(names_x) ^ set(names_y))}")
        for name in names_x:
            if name in y and isinstance(x[name], h5py.Dataset):
                if not np.array_equal(x[name][()], y[name][()]):
                    out.append(f"{a.name}: array {name} differs")
        for key in set(x.attrs) | set(y.attrs):
            vx, vy = x.attrs.get(key), y.attrs.get(key)
            if not np.array_equal(np.asarray(vx), np.asarray(vy)):
                out.append(f"{a.name}: attribute {key} differs")
    return out


def main(old: Path, new: Path) -> int:
    problems, checked = [], []
    for path in sorted(old.rglob("*")):
        relative = path.relative_to(old)
        other = new / relative
        if relative.parts[0] in ("logs", "benchmarks", "checkpoints") or path.is_dir():
            continue
        if not other.exists():
            problems.append(f"{relative}: missing in {new}")
            continue
        if path.name in ("dataset.h5", "samples.h5"):
            # samples.h5 names the model path it came from: the same relative path in both
            found = h5_differences(path, other)
            problems += [f"{relative}: {p}" for p in found if "attribute model " not in p]
        elif path.suffix == ".pt":
            wa = torch.load(path, weights_only=True)["state_dict"]
            wb = torch.load(other, weights_only=True)["state_dict"]
            if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
                problems.append(f"{relative}: weights differ")
        elif path.suffix == ".json":
            if json.loads(path.read_text()) != json.loads(other.read_text()):
                problems.append(f"{relative}: contents differ")
        elif path.name in ("summary.csv", "s2.csv"):
            if path.read_text() != other.read_text():
                problems.append(f"{relative}: text differs")
        elif path.name == "history.csv":  # the timing columns differ from run to run
            def untimed(p):
                rows = [line.split(",") for line in p.read_text().splitlines()]
                drop = {rows[0].index("seconds"), rows[0].index("images_per_s")}
                return [[v for i, v in enumerate(r) if i not in drop] for r in rows]
            if untimed(path) != untimed(other):
                problems.append(f"{relative}: history differs (beyond its timing columns)")
        else:
            continue
        checked.append(str(relative))
    print(f"compared {len(checked)} files: {', '.join(checked)}")
    for problem in problems:
        print("DIFFERS:", problem)
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
