"""A learned 3-D generator trained on volumes (``conv3d``, issue 24's "from volumes" route),
judged section by section along each axis against the floor of independent real volumes,
beside the descriptor-based reconstruction, blurred noise and real held-out volumes.

Same data and judge as ``volumes_from_sections.py`` (the default recipe as cubes of 128^3: 4
train, 8 test = the blocks of the floor, 4 held out; sections every 16 voxels, windows of 64
px). Per training seed: a conv3d VAE (``VolumeTrainSettings()``) trained on random 32^3 crops
of the 4 train volumes under the 48 symmetries of the cube, its ``diffusion`` prior
(``volume_diffusion_config()``, on the codes of the train volumes under 12 symmetries each) and
its ``field`` prior, then one periodic 128^3 volume from each prior and from N(0, I)
(``prior``), each decoded in slabs and cut at 0.5.
The reconstruction route's volumes are read from runs/volumes_from_sections/ where that study
left them, so that both routes are judged in one run. The reconstruction IoU of the test
volumes (encoded and decoded whole) says how well each model learned real volumes it never saw.

    python benchmarks/studies/volumes_learned.py --seeds 0 1 2

A real volume: ``--real-volume berea_100_to_300.npz`` (as in volumes_from_sections.py: the
Berea micro-CT volume cut into octants of 100^3; octant 0 trains, 1-6 are the floor's blocks, 7
is held out); generated volumes of 96^3 (a periodic diffusion draw needs multiples of 32),
windows of 48 px.

Writes benchmarks/results/volumes_learned.json (parts ``synthetic`` and ``berea``, each kept
when the other is run); keeps the models (.pt) and volumes (.npy) under runs/volumes_learned/
(a run reuses what it finds there).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/machine.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from volumes_from_sections import (
    SEEDS,
    SPACING,
    WINDOW,
    blurred_noise,
    fitted_blur,
    judged_by_axis,
    octants,
    real_volumes,
    study_start,
)

from machine import REPO, save
from microvae.device import select_runtime
from microvae.model import ConvVAE3d
from microvae.modelfile import load_prior, save_prior
from microvae.reconstruct3d import plane_statistics
from microvae.volume_vae import (
    VolumeTrainSettings,
    fit_volume_diffusion,
    fit_volume_field,
    generate_volumes,
    reconstruction_iou,
    train_volume_vae,
    volume_diffusion_config,
)
from microvae.volumes import judge_volume_descriptors, sections, volume_descriptors

SIDE = 128
SETTINGS = VolumeTrainSettings()
OUT = REPO / "runs" / "volumes_learned"


def trained(train: list[np.ndarray], seed: int, prefix: str = "",
            settings: VolumeTrainSettings = SETTINGS, path: Path | None = None
            ) -> tuple[ConvVAE3d, dict]:
    """The conv3d model of ``seed`` (kept at ``path``, by default under runs/volumes_learned/;
    reused where it exists) and its training record."""
    path = path or OUT / f"{prefix}conv3d_seed{seed}.pt"
    record_path = path.with_suffix(".json")
    if path.exists() and record_path.exists():
        model = ConvVAE3d(settings.crop_size, settings.latent_channels)
        model.load_state_dict(torch.load(path))
        return model.eval(), json.loads(record_path.read_text())
    runtime = select_runtime()
    training = train_volume_vae(train, settings, torch.Generator().manual_seed(seed), runtime,
                                log_every=250, on_log=lambda row: print(seed, row, flush=True))
    record = {"seconds": round(training.seconds, 1), "steps": training.steps,
              "stop_reason": training.stop_reason, "bf16": runtime.bf16,
              "threads": torch.get_num_threads(), "history": training.history}
    torch.save(training.model.state_dict(), path)
    record_path.write_text(json.dumps(record) + "\n")
    return training.model, record


def diffusion_prior(model: ConvVAE3d, train: list[np.ndarray], seed: int, record: dict,
                    prefix: str = "", path: Path | None = None):
    """The diffusion prior of ``model`` (kept at ``path``; reused where it exists); its
    training record goes to ``record["diffusion"]``."""
    path = path or OUT / f"{prefix}conv3d_seed{seed}_diffusion.pt"
    if path.exists():
        prior, payload = load_prior(path)
        record["diffusion"] = payload["extra"]
        return prior
    start = time.perf_counter()
    prior = fit_volume_diffusion(model, train, torch.Generator().manual_seed(2000 + seed),
                                 volume_diffusion_config(seed=seed), log=print)
    record["diffusion"] = {"seconds": round(time.perf_counter() - start, 1), **prior.describe()}
    save_prior(prior, path, record["diffusion"])
    return prior


def generated(model: ConvVAE3d, train: list[np.ndarray], seed: int, record: dict, side: int,
              prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for mode in ("diffusion", "field", "prior"):
        path = OUT / f"{prefix}conv3d_{mode}_seed{seed}.npy"
        if path.exists():
            out[mode] = np.load(path)
            continue
        generator = torch.Generator().manual_seed(1000 + seed)
        if mode == "diffusion":
            prior = diffusion_prior(model, train, seed, record, prefix)
        elif mode == "field":
            prior = fit_volume_field(model, train, generator)
        else:
            prior = None
        start = time.perf_counter()
        out[mode] = generate_volumes(model, prior, 1, (side,) * 3, generator, periodic=True)[0]
        print(f"seed {seed} {mode}: {time.perf_counter() - start:.1f} s, phase fraction "
              f"{out[mode].mean():.3f}", flush=True)
        np.save(path, out[mode])
    return out


def study(real: dict[str, list[np.ndarray]], side: int, seeds: list[int], tag: str,
          window: int, spacing: int) -> dict:
    """The conv3d route per seed beside the reconstruction's volumes of the same tag (where
    volumes_from_sections.py left them), blurred noise and the held-out volumes, judged per
    axis against the test volumes."""
    prefix = "" if tag == "synthetic" else f"{tag}_"
    sets: dict[str, tuple[list[np.ndarray], str]] = {}
    records, ious = {}, {}
    reconstructions = REPO / "runs" / "volumes_from_sections"
    seen = np.concatenate([sections(v, 0, 4) for v in real["train"]])
    blur = fitted_blur(plane_statistics(seen, isotropic=True), side, np.random.default_rng(0))
    for seed in seeds:
        model, records[seed] = trained(real["train"], seed, prefix)
        prior_path = OUT / f"{prefix}conv3d_seed{seed}_diffusion.pt"
        if prior_path.exists():  # its training record, where the volumes are reused
            records[seed]["diffusion"] = load_prior(prior_path)[1]["extra"]
        ious[seed] = [round(reconstruction_iou(model, v), 4) for v in real["test"]]
        print(f"{tag} seed {seed}: test IoU {ious[seed]}", flush=True)
        for mode, volume in generated(model, real["train"], seed, records[seed], side,
                                      prefix).items():
            sets[f"conv3d_{mode}_seed{seed}"] = ([volume], "generator")
        path = reconstructions / f"{tag}_sections_seed{seed}.npy"
        if path.exists():
            sets[f"reconstruction_sections_seed{seed}"] = ([np.load(path)], "generator")
        sets[f"blurred_noise_seed{seed}"] = ([blurred_noise(
            (side,) * 3, blur, float(seen.mean()), np.random.default_rng(seed))], "baseline")
    for index, volume in enumerate(real["heldout"]):
        sets[f"real_heldout_{index}"] = ([volume], "ceiling")
    descriptors = {name: [volume_descriptors(v) for v in volumes]
                   for name, (volumes, _) in sets.items()}
    real_test = [volume_descriptors(v) for v in real["test"]]
    return {
        "side": side, "window": window, "section_spacing": spacing, "blurred_noise_blur": blur,
        "n_volumes": {k: len(v) for k, v in real.items()},
        "training": records, "test_iou": ious,
        "by_axis": judged_by_axis(real["test"], sets, window, spacing),
        "descriptors_3d": judge_volume_descriptors(real_test, descriptors),
        "volume_descriptors": {**descriptors, "real_test": real_test},
    }


def main() -> None:
    args, result, command = study_start("volumes_learned", __doc__.splitlines()[0])
    OUT.mkdir(parents=True, exist_ok=True)
    if args.real_volume is None:
        result["synthetic"] = {"command": command, "volume_seeds": {
            k: list(v) for k, v in SEEDS.items()}, **study(
                real_volumes(), SIDE, args.seeds, "synthetic", WINDOW, SPACING)}
    else:
        pieces = octants(np.load(args.real_volume)["im"].astype(np.uint8))
        real = {"train": pieces[:1], "test": pieces[1:7], "heldout": pieces[7:]}
        result["berea"] = {"command": f"{command} --real-volume {args.real_volume.name}",
                           "source": "openpnm 3.6.4 sdist, tests/fixtures/berea_100_to_300.npz "
                                     "(MIT), octants of 100^3; generated volumes of 96^3",
                           **study(real, 96, args.seeds, "berea", 48, 12)}
    # settings per part: a part run again with other defaults leaves the other part's own
    for part in ("synthetic", "berea"):
        if part in result and "settings" not in result[part] and "settings" in result:
            result[part]["settings"] = result["settings"]
            result[part]["diffusion_settings"] = result["diffusion_settings"]
    result.pop("settings", None)
    result.pop("diffusion_settings", None)
    part = result["synthetic" if args.real_volume is None else "berea"]
    part["settings"] = asdict(SETTINGS)
    part["diffusion_settings"] = asdict(volume_diffusion_config())
    save("volumes_learned", result)


if __name__ == "__main__":
    main()
