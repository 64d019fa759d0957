"""What ``model.architecture: auto`` sees in each image of the gallery and in the embedded
default: the phase boundary per training tile (the quantity it chooses on), the mean chords of
each phase, the model it chooses, and beside it Table 1's test IoU at latent 64 from
``benchmarks/results/fidelity*.json`` where one was measured.

Only the data stages run (ingest, segment, pack: a minute in all); writes
``benchmarks/results/feature_sizes.json``.

    python benchmarks/studies/feature_sizes.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import yaml
from gallery import DATA, GALLERY, REPO

from machine import save
from microvae.dataset import evenly_spaced
from microvae.descriptors import feature_size
from microvae.train import (
    ISOTROPY_TILES,
    TABLE1_INTERFACE_PER_TILE,
    choose_architecture,
    interface_per_tile,
)

# Table 1 at latent 64, the tuned settings, training seed 0 (the result file and its run).
TABLE1_RESULTS = (("fidelity.json", "results", None),
                  ("fidelity_defaults.json", "runs", "avx2_auto_bentheimer_fine"))


def table1_test_iou() -> dict[str, float]:
    found = {}
    for file, key, run in TABLE1_RESULTS:
        data = json.loads((REPO / "benchmarks" / "results" / file).read_text())[key]
        results = data[run]["results"] if run else data
        for name, per_latent in results.items():
            if "64" in per_latent:
                found[name] = per_latent["64"]["runs"][0]["test_iou"]
    return found


def data_set(name: str, config: dict) -> h5py.File:
    directory = REPO / "runs" / "feature_sizes" / name
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                    "--directory", str(directory), "--cores", "2", "--quiet", "rules", "--",
                    "results/dataset/dataset.h5"], check=True)
    return h5py.File(directory / "results" / "dataset" / "dataset.h5")


def main() -> None:
    configs = {name: {"image_size": size,
                      "sources": [{"name": name, "paths": [str(DATA / file)], **options}]}
               for name, (file, size, options) in GALLERY.items()}
    configs["default_synthetic_steel"] = yaml.safe_load(
        (REPO / "config" / "config.yaml").read_text())
    iou = table1_test_iou()
    rows = {}
    for name, config in configs.items():
        with data_set(name, config) as h5:
            tiles = evenly_spaced(h5["train"][()], ISOTROPY_TILES)
        chords = feature_size(tiles)
        chosen, why = choose_architecture(tiles)
        rows[name] = {"tile_px": int(tiles.shape[-1]), "tiles": len(tiles),
                      "interface_per_tile_px": interface_per_tile(tiles),
                      "mean_chord_px": {str(k): v for k, v in chords.items()},
                      "auto": chosen, "why": why, "table1_test_iou_latent64": iou.get(name)}
        print(f"{name}: {rows[name]['interface_per_tile_px']:.0f} px of phase boundary per "
              f"{rows[name]['tile_px']} px tile -> {chosen}; Table 1 test IoU "
              f"{iou.get(name, float('nan')):.3f}", flush=True)
    save("feature_sizes", {"command": "python benchmarks/studies/feature_sizes.py",
                           "threshold_px": TABLE1_INTERFACE_PER_TILE, "images": rows})


if __name__ == "__main__":
    main()
