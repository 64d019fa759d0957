"""The default workflow, latent size 64, on each real micrograph of tests/data (sources and
licences in tests/data/README.md): for the unseeded modes, the verdict and S2 (radial) and
phase-fraction W1 against the floor's 95th percentile. Runs in runs/gallery/<name>/.

    python benchmarks/gallery.py [--cores 2] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import yaml

from machine import save

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
# name: (file, image size, source options)
GALLERY = {
    "sem_nanoporous_gold": ("sem_nanoporous_gold.png", 32, {"crop": {"bottom": 77}}),
    "optical_aluminum": ("optical_aluminum.png", 16,
                         {"stride": 4, "segmentation": {"opening_radius": 0}}),
    "bentheimer_slice": ("bentheimer_slice.npy", 32, {"stride": 8}),
    "berea_volume": ("berea_volume.tif", 32, {"axes": [0]}),
}
UNSEEDED = ("prior", "aggregate", "mixture")


def run(name: str, epochs: int, cores: int) -> list[dict[str, str]]:
    file, size, options = GALLERY[name]
    defaults = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = {"image_size": size,
              "sources": [{"name": name, "paths": [str(DATA / file)], **options}],
              "model": {"latent_sizes": [64], "kl_weight": 0.1},
              "train": {**defaults["train"], "epochs": epochs}}
    directory = REPO / "runs" / "gallery" / name
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                    "--directory", str(directory), "--cores", str(cores), "--quiet", "rules"],
                   check=True)
    with open(directory / "results" / "evaluation" / "summary.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["mode"] in UNSEEDED
                or row["mode"] == "reconstruction"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=list(GALLERY))
    args = parser.parse_args()
    results = {}
    for name in args.only:
        rows = run(name, args.epochs, args.cores)
        table = {}
        for row in rows:
            entry = {"verdict": row["verdict"], "recon_iou": float(row["recon_iou"]),
                     "phase_fraction": float(row["phase_fraction"]),
                     "real_phase_fraction": float(row["real_phase_fraction"])}
            for key in ("s2_nrmse_radial", "phase_fraction_wasserstein"):
                entry[key] = float(row[key])
                entry[f"floor_p95_{key}"] = float(row[f"floor_p95_{key}"])
                entry[f"{key}_over_floor_p95"] = float(row[key]) / float(row[f"floor_p95_{key}"])
            table[row["mode"]] = entry
        best = min(UNSEEDED, key=lambda m: (-int(table[m]["verdict"].split()[0]),
                                            table[m]["s2_nrmse_radial_over_floor_p95"]))
        results[name] = {"modes": table, "best_unseeded": best}
        b = table[best]
        print(f"{name}: recon IoU {b['recon_iou']:.3f}; best unseeded {best}: {b['verdict']}; "
              f"S2 {b['s2_nrmse_radial']:.3g} ({b['s2_nrmse_radial_over_floor_p95']:.1f}x floor p95), "
              f"W1 {b['phase_fraction_wasserstein']:.3g} "
              f"({b['phase_fraction_wasserstein_over_floor_p95']:.1f}x); phase fraction "
              f"{b['phase_fraction']:.3f} vs {b['real_phase_fraction']:.3f}", flush=True)
    save("gallery", {"epochs": args.epochs, "results": results})


if __name__ == "__main__":
    main()
