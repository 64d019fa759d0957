"""The gallery of real micrographs (tests/data; sources and licences in tests/data/README.md)
that benchmarks/fidelity.py runs the workflow on: per image its source options, the training
settings for real micrographs (REAL_TRAINING), and the reading of the unseeded modes' results.
"""

from __future__ import annotations

from pathlib import Path

from machine import REPO, run_workflow

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
}
# Training for real micrographs: length in steps with early stopping, bounded in time, on random
# dihedral crops (all gallery images are isotropic).
REAL_TRAINING = {"epochs": None, "max_steps": 20000, "steps_per_epoch": 250, "patience": 8,
                 "max_minutes": 8, "batch_size": 32, "learning_rate": 0.001, "crops": True,
                 "augment": "dihedral", "max_val_images": 1024}
UNSEEDED = ("prior", "aggregate", "mixture")


def run(name: str, train: dict, cores: int, latent_sizes: tuple[int, ...] = (64,),
        directory: Path | None = None, model: dict | None = None) -> list[dict[str, str]]:
    """Run the workflow on one gallery image; the rows of its summary.csv."""
    file, size, options = GALLERY[name]
    config = {"image_size": size,
              "sources": [{"name": name, "paths": [str(DATA / file)], **options}],
              "model": {"latent_sizes": list(latent_sizes), "kl_weight": 0.1, **(model or {})},
              "train": train}
    return run_workflow(directory or REPO / "runs" / "gallery" / name, config, cores)


def unseeded_table(rows: list[dict[str, str]], latent: int) -> tuple[dict[str, dict], str]:
    """Per unseeded mode of one latent size: verdict, S2 (radial) and phase-fraction W1 with
    their ratio to the floor's 95th percentile; and the best mode (most descriptors within
    the floor, then the lowest S2 ratio)."""
    table = {}
    for row in rows:
        if int(row["latent"]) != latent or row["mode"] not in UNSEEDED:
            continue
        entry = {"verdict": row["verdict"], "phase_fraction": float(row["phase_fraction"]),
                 "real_phase_fraction": float(row["real_phase_fraction"]),
                 "novelty_fraction_closer": float(row.get("novelty_fraction_closer", "nan"))}
        for key in ("s2_nrmse_radial", "phase_fraction_wasserstein"):
            entry[key] = float(row[key])
            entry[f"floor_p95_{key}"] = float(row[f"floor_p95_{key}"])
            entry[f"{key}_over_floor_p95"] = float(row[key]) / float(row[f"floor_p95_{key}"])
        table[row["mode"]] = entry
    best = min(table, key=lambda m: (-int(table[m]["verdict"].split()[0]),
                                     table[m]["s2_nrmse_radial_over_floor_p95"]))
    return table, best
