"""`microvae score` on files no one here generated: porespy's `blobs` generator (a 3-D volume of
Gaussian-filtered noise cut at a level, the field's standard synthetic structure), at the
default's martensite fraction and at two blob sizes, judged per axis against a finished run's
test images beside its baselines and real held-out set.

    python benchmarks/studies/score_example.py --run runs/seed_0 [--blobiness 1 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import judged, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run of the default config")
    parser.add_argument("--blobiness", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 160, 160])
    args = parser.parse_args()
    import porespy as ps
    import tifffile

    results = Path(args.run) / "results"
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for blobiness in args.blobiness:
            # porespy's porosity is the share of True voxels; phase 1 (martensite) is the rest
            volume = ps.generators.blobs(shape=args.shape, porosity=0.76, blobiness=blobiness,
                                         seed=1)
            path = Path(tmp) / f"blobs_{blobiness:g}.tif"
            tifffile.imwrite(path, (~volume).astype(np.uint8) * 255)
            files.append(path)
        out = {}
        for path in files:
            card = Path(tmp) / path.stem
            subprocess.run([sys.executable, "-m", "microvae", "score", "--generated", str(path),
                            "--dataset", str(results / "dataset" / "dataset.h5"), "--baselines",
                            str(results / "baselines" / "baselines.h5"), "--out-dir", str(card)],
                           check=True)
            metrics = json.loads((card / "scorecard.json").read_text())
            out[path.stem] = {name: judged(values) for name, values in metrics["sets"].items()}
            for name, values in out[path.stem].items():
                print(f"{path.stem} {name}: {values['verdict']}; failed {values['failed']}; "
                      f"novelty {values.get('novelty_fraction_closer', float('nan')):.2f}")
    save("score_example", {"run": args.run, "shape": args.shape, "blobiness": args.blobiness,
                           "scorecards": out})


if __name__ == "__main__":
    main()
