import json
import os
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library is imported from this checkout where there is one (also in conda environments
# that hold only the dependencies: rules run `python -m microvae` with src/ on the path), else
# from the installed package (a workflow deployed as a module from a remote source).
# This file's folder, not workflow.basedir: in a module that is the importing workflow's.
_RULES = workflow.current_basedir
SRC = Path(_RULES).parents[1] / "src" if _RULES.is_local else None
IN_CHECKOUT = SRC is not None and (SRC / "microvae").is_dir()
if IN_CHECKOUT:
    sys.path.insert(0, str(SRC))
from microvae.config import (  # noqa: E402
    config_errors,
    cross_field_errors,
    prepend_pythonpath,
    schema,
    schema_path,
    whole_numbers,
    source_options,
    synthetic_options as synthetic_parameters,
    training_options as training_parameters,
)
from microvae import memory  # noqa: E402
from microvae.errors import MicrovaeError  # noqa: E402
from microvae.modes import DIFFUSION_SAMPLING_KEYS  # noqa: E402
from microvae.logs import warnings_of_logs  # noqa: E402
from microvae.ingest import expand_paths  # noqa: E402

if IN_CHECKOUT:
    prepend_pythonpath(SRC)


# Schema and cross-field checks are library functions (microvae.config, unit-tested); the
# schema is the one source of every option's default.
def _refuse(errors):
    if errors:
        raise WorkflowError("invalid configuration:\n  " + "\n  ".join(errors))


_refuse(config_errors(config, schema()))
validate(config, schema=str(schema_path()))  # fills in the defaults
config.update(whole_numbers(config, schema()))  # 40.0 where an integer is meant: 40
_refuse(cross_field_errors(config))
SOURCES = {s["name"]: s for s in config["sources"]}
LATENTS = config["model"]["latent_sizes"]
# conv models generate (and export) images larger than the tiles: sample.sizes
LARGE_SIZES = config["sample"]["sizes"]
# Every model gets its learned prior (mode diffusion), trained after the VAE: over the latent
# grids of a conv model, over the latent vectors of a Table 1 model (with architecture auto
# the train job chooses which from the data; rule train_prior reads what it chose).
DIFFUSION = config["diffusion"]["enabled"]
# 3-D: a conv3d model on the data set's volumes, generated volumes judged against real ones.
VOLUME = config["volume"]["enabled"]
# The volume section's keys that only the generation reads (a change re-generates, no retraining).
VOLUME_GENERATION_KEYS = (
    "shape",
    "modes",
    "n",
    "periodic",
    "phase_fractions",
    "threads",
)


wildcard_constraints:
    source="|".join(SOURCES),
    index=r"\d+",
    latent=r"\d+",


def _expand_globs(patterns, key):
    try:
        return [str(path) for path in expand_paths(patterns, f"config key {key}")]
    except MicrovaeError as error:
        raise WorkflowError(str(error))


def synthetic_volumes(name):
    """Indices of the synthetic volumes of a source."""
    return [f"{i:03d}" for i in range(SOURCES[name]["synthetic"]["n_volumes"])]


def source_images(wildcards):
    source = SOURCES[wildcards.source]
    if "synthetic" in source:
        return expand(
            "results/raw/{source}/volume_{index}_iq.tif",
            source=wildcards.source,
            index=synthetic_volumes(wildcards.source),
        )
    return _expand_globs(source["paths"], f"sources[{wildcards.source}].paths")


def source_truth(wildcards):
    source = SOURCES[wildcards.source]
    if "synthetic" in source:
        return expand(
            "results/raw/{source}/volume_{index}_phase.tif",
            source=wildcards.source,
            index=synthetic_volumes(wildcards.source),
        )
    if "truth" in source:
        return _expand_globs(source["truth"], f"sources[{wildcards.source}].truth")
    return []


def ingest_options(wildcards):
    """The reader options of a source as JSON (a change re-runs ingest and what follows)."""
    return json.dumps(source_options(SOURCES[wildcards.source]), sort_keys=True)


def segmentation_options(wildcards):
    return json.dumps(SOURCES[wildcards.source]["segmentation"], sort_keys=True)


# Memory from the input's size (microvae.memory, measured by benchmarks/speed/stage_memory.py); more
# on each retry. Before the input exists (planning) the floor stands in.
def ingest_mem_mb(wildcards, input, attempt):
    options = source_options(SOURCES[wildcards.source])
    return memory.ingest_mb(
        input.images,
        config["image_size"],
        options.get("stride"),
        options.get("dataset"),
        attempt,
    )


def segment_mem_mb(wildcards, input, attempt):
    return memory.tiles_mb("segment", input, attempt)


def pack_mem_mb(wildcards, input, attempt):
    return memory.tiles_mb("pack", input, attempt)


def synthetic_options(wildcards):
    return json.dumps(synthetic_parameters(SOURCES[wildcards.source]), sort_keys=True)


def synthetic_seed(wildcards):
    return SOURCES[wildcards.source]["synthetic"]["seed"] + int(wildcards.index)


def split_fractions():
    split = config["split"]
    return json.dumps({k: split[k] for k in ("train", "val", "test")}, sort_keys=True)


def training_options():
    """Training settings as JSON: a change re-runs training and everything downstream."""
    return json.dumps(training_parameters(config), sort_keys=True)


def sample_options():
    """The sample rule's settings as JSON: the sample section, and the diffusion prior's
    sampling settings where there is one (a change re-samples without re-training)."""
    settings = dict(config["sample"])
    if DIFFUSION:
        settings.update({k: config["diffusion"][k] for k in DIFFUSION_SAMPLING_KEYS})
    return json.dumps(settings, sort_keys=True)


def section_options(section):
    """One config section as JSON (the --params of a stage)."""
    return json.dumps(config[section], sort_keys=True)


def diffusion_options():
    """The diffusion prior's training settings as JSON (a change re-trains it and what
    follows; the sampling settings go to the sample rule)."""
    settings = {
        k: v
        for k, v in config["diffusion"].items()
        if k not in ("enabled", *DIFFUSION_SAMPLING_KEYS)
    }
    return json.dumps(settings, sort_keys=True)


def diffusion_prior(wildcards):
    """The trained diffusion prior a sample job reads (none without it)."""
    if not DIFFUSION:
        return []
    return f"results/models/latent_{wildcards.latent}/diffusion.pt"


def diffusion_prior_option(wildcards, input):
    """The sample rule's --diffusion FILE ("" without a diffusion prior)."""
    if not DIFFUSION:
        return ""
    return f"--diffusion {input.diffusion}"


def volume_training_options():
    """The conv3d model's training settings as JSON (a change re-trains it and what follows)."""
    settings = {
        k: v
        for k, v in config["volume"].items()
        if k not in ("enabled", *VOLUME_GENERATION_KEYS)
    }
    return json.dumps(settings, sort_keys=True)


def volume_pixel_options():
    """--pixel-size/--pixel-unit of the generated volumes: the first source with a
    pixel_size (none: voxels)."""
    for source in config["sources"]:
        if source.get("pixel_size"):
            return f"--pixel-size {source['pixel_size']} --pixel-unit {source['pixel_unit']}"
    return ""


def generated_volumes():
    return expand(
        "results/volumes/{mode}_{index}.vti",
        mode=config["volume"]["modes"],
        index=range(config["volume"]["n"]),
    )


def volume_mode_options(wildcards):
    """--mode (and --phase-fraction) of a generated volume set: a prior's name, or
    target_{fraction} (the diffusion prior at that phase fraction)."""
    if wildcards.set.startswith("target_"):
        return (
            f"--mode diffusion --phase-fraction {wildcards.set.removeprefix('target_')}"
        )
    return f"--mode {wildcards.set}"


def target_volumes():
    """The volumes at each target phase fraction of volume.phase_fractions."""
    return expand(
        "results/volumes/target_{fraction}_{index}.vti",
        fraction=[f"{f:g}" for f in config["volume"]["phase_fractions"]],
        index=range(config["volume"]["n"]),
    )


def large_metrics():
    return (
        expand("results/evaluation/latent_{latent}/large.json", latent=LATENTS)
        if LARGE_SIZES
        else []
    )


def data_targets():
    return [
        "results/dataset/dataset.h5",
        *expand("results/segmented/{source}_qa.json", source=SOURCES),
    ]


def all_targets():
    return data_targets() + [
        *expand("results/models/latent_{latent}/model.pt", latent=LATENTS),
        *expand("results/samples/latent_{latent}/samples.h5", latent=LATENTS),
        *expand("results/evaluation/latent_{latent}/metrics.json", latent=LATENTS),
        "results/evaluation/summary.csv",
        *(
            expand("results/export/latent_{latent}", latent=LATENTS)
            if LARGE_SIZES
            else []
        ),
        *(["results/evaluation/volumes.json", *target_volumes()] if VOLUME else []),
    ]


RUN_STARTED = time.time()


def print_warnings(folder):
    """The warnings in the logs of this run's jobs, printed at the end of a run that succeeded:
    a job that exits 0 may still warn (a morphology that changed the phase fraction, a restart
    of a collapsed training, a floor resting on few blocks)."""
    found = warnings_of_logs(folder, since=RUN_STARTED)
    if found:
        print(f"\n{len(found)} warning(s) in the logs of this run ({folder}/):")
        for log_file, line in found:
            print(f"  {log_file}: {line}")
