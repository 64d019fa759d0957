"""Is the judge calibrated, and does it have power? On a finished run of the synthetic default
(its data set and baselines), draws fresh real data (new synthetic volumes, made and segmented
exactly as the source's; none was ever seen by the run) and judges, draw by draw, with the
draw's own evaluation seed:

* ``real_fresh``: three fresh volumes (the size of the val split), a perfect generator: it
  must pass every judged descriptor in >= 90% of the draws;
* ``real_heldout``: the run's val split, with the draw's seed;
* ``baseline_grf``: a fresh draw of the Gaussian-random-field baseline (same fit, new images):
  it must fail at least 2 descriptors in every draw;
* ``baseline_copy``: fresh random crops of the training regions.

    python benchmarks/studies/judge_calibration.py --run runs/seed_0 [--draws 8] [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import REPO, save
from microvae.baselines import fit_field_baseline, training_crops
from microvae.dataset import evenly_spaced
from microvae.evaluate import Features, ScoredSet, judge
from microvae.h5io import load_split, load_training_regions, open_h5
from microvae.ingest import SourceOptions
from microvae.segment import SegmentationParameters
from microvae.stages import segmentation_morphology
from microvae.stages.data import ingest_files, segment_file, synthesize
from microvae.stages.evaluate import real_set
from microvae.synthetic import SteelParameters

VOLUMES_PER_DRAW = 3


def fresh_tiles(source: dict, threshold: float, seeds: list[int], size: int,
                directory: Path) -> np.ndarray:
    """Segmented tiles of fresh synthetic volumes, made as the source's were (its generator
    parameters, reader options and segmentation; the Otsu threshold the source got)."""
    synthetic = {k: v for k, v in source["synthetic"].items() if k not in ("n_volumes", "seed")}
    files = []
    for seed in seeds:
        iq = directory / f"volume_{seed}_iq.tif"
        synthesize(SteelParameters.from_options(synthetic), seed, iq, directory / f"p{seed}.tif")
        files.append(str(iq))
    reader = {k: v for k, v in source.items() if k not in ("synthetic", "segmentation")}
    ingest_files(files, directory / "ingested.h5", SourceOptions.from_options(reader), size)
    options = {**source.get("segmentation", {}), "threshold": threshold}
    segment_file(directory / "ingested.h5", directory / "segmented.h5", directory / "qa.json",
                 SegmentationParameters.from_options(options))
    with open_h5(directory / "segmented.h5") as h5:
        return h5["images"][()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run of the default config")
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    (source,) = config["sources"]
    run = Path(args.run) / "results"
    dataset = run / "dataset" / "dataset.h5"
    qa = json.loads((run / "segmented" / f"{source['name']}_qa.json").read_text())
    size = config["image_size"]
    test = real_set(dataset, "test")
    val = real_set(dataset, "val")
    train = load_split(dataset, "train")
    regions = load_training_regions(dataset)
    morphology = segmentation_morphology(dataset)
    grf = fit_field_baseline(evenly_spaced(train, 2000), morphology, np.random.default_rng(0))
    n = config.get("sample", {}).get("n_prior", 500)
    rows = []
    for draw in range(args.draws):
        seeds = [10_000 + VOLUMES_PER_DRAW * draw + i for i in range(VOLUMES_PER_DRAW)]
        with tempfile.TemporaryDirectory() as tmp:
            fresh = fresh_tiles(source, qa["threshold"], seeds, size, Path(tmp))
        rng = np.random.default_rng(draw)
        sets = {
            "real_fresh": ScoredSet(Features.of(fresh), "ceiling"),
            "real_heldout": ScoredSet(val.features, "ceiling"),
            "baseline_grf": ScoredSet(Features.of(grf.draw(n, size, rng)), "baseline",
                                      calibrated=("phase_fraction",)),
            "baseline_copy": ScoredSet(Features.of(training_crops(
                *regions, n, size, torch.Generator().manual_seed(draw), morphology)), "baseline"),
        }
        judged = judge(test.features, test.blocks, sets, rng)["sets"]
        row = {"draw": draw, "volume_seeds": seeds}
        for name, values in judged.items():
            row[name] = {"n_within": values["n_within"], "n_judged": values["n_judged"],
                         "failed": [k for k, ok in values["within_floor"].items() if not ok],
                         "floor_multiple": values["floor_multiple"],
                         "exceedance": values["exceedance"]}
        rows.append(row)
        print(draw, {name: f"{v['n_within']}/{v['n_judged']} failed {v['failed']}"
                     for name, v in row.items() if isinstance(v, dict)}, flush=True)
    summary = {}
    for name in ("real_fresh", "real_heldout", "baseline_grf", "baseline_copy"):
        passed_all = [r[name]["n_within"] == r[name]["n_judged"] for r in rows]
        n_failed = [r[name]["n_judged"] - r[name]["n_within"] for r in rows]
        summary[name] = {"share_of_draws_passing_every_descriptor": float(np.mean(passed_all)),
                         "descriptors_failed_per_draw": n_failed,
                         "min_failed": int(min(n_failed)), "max_failed": int(max(n_failed))}
        print(name, summary[name])
    save(f"judge_calibration{args.tag}", {"run": str(args.run), "config": args.config,
                                          "draws": args.draws, "reference": test.info,
                                          "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
