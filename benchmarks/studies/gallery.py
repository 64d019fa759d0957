"""The gallery of real micrographs (tests/data; sources and licences in tests/data/README.md)
that benchmarks/studies/fidelity.py runs the workflow on: per image its source options, the training
settings for real micrographs (REAL_TRAINING), and the reading of the unseeded modes' results.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
from machine import REPO, judged, run_workflow

DATA = REPO / "tests" / "data"
# name: (file, image size, source options)
GALLERY = {
    "sem_nanoporous_gold": ("sem_nanoporous_gold.png", 32, {"crop": {"bottom": 77}}),
    "optical_aluminum": ("optical_aluminum.png", 16,
                         {"stride": 4, "segmentation": {"opening_radius": 0}}),
    "bentheimer_slice": ("bentheimer_slice.npy", 32, {"stride": 8}),
    "berea_volume": ("berea_volume.tif", 32, {"axes": [0]}),
    # sparse (8.8% pores): the pores of the Bentheimer slice wider than about 9 px, by an opening
    "bentheimer_large_pores": ("bentheimer_slice.npy", 32,
                               {"stride": 8, "segmentation": {"opening_radius": 4}}),
    # fine-pored: the same sandstone at twice the voxel size (mean pore chord 4.9 px)
    "bentheimer_fine": ("bentheimer_fine.npy", 32, {"stride": 8}),
}
# Training for real micrographs: length in steps with early stopping, bounded in time, on random
# dihedral crops (all gallery images are isotropic).
REAL_TRAINING = {"epochs": None, "max_steps": 20000, "steps_per_epoch": 250, "patience": 8,
                 "max_minutes": 8, "batch_size": 32, "learning_rate": 0.001, "crops": True,
                 "augment": "dihedral", "max_val_images": 1024}


def run(name: str, train: dict, cores: int, latent_sizes: tuple[int, ...] = (64,),
        directory: Path | None = None, model: dict | None = None,
        extra: dict | None = None) -> Path:
    """Run the workflow on one gallery image (``extra``: other top-level config keys); its
    results folder."""
    file, size, options = GALLERY[name]
    config = {"image_size": size,
              "sources": [{"name": name, "paths": [str(DATA / file)], **options}],
              "model": {"latent_sizes": list(latent_sizes), "kl_weight": 0.1, **(model or {})},
              "train": train, **(extra or {})}
    directory = directory or REPO / "runs" / "gallery" / name
    run_workflow(directory, config, cores)
    return directory / "results"


def unseeded_table(metrics: dict) -> tuple[dict[str, dict], str]:
    """The unseeded modes, the baselines and the real held-out set of one latent size's
    metrics.json, judged; and the unseeded mode chosen on the val split."""
    table = {name: judged(values) for name, values in metrics["sets"].items()
             if name in ("prior", "aggregate", "mixture", "field")
             or values["role"] in ("baseline", "ceiling")}
    return table, metrics.get("selection", {}).get("best_unseeded", "")
