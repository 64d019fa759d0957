import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library is imported from this checkout, also in conda environments that hold only the
# dependencies: rules run `python -m microvae` with src/ on the path.
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
from microvae.config import config_errors, load_yaml, prepend_pythonpath  # noqa: E402
from microvae.errors import MicrovaeError  # noqa: E402
from microvae.ingest import expand_paths  # noqa: E402

prepend_pythonpath(SRC)

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
_errors = config_errors(config, load_yaml(SCHEMA))
if _errors:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_errors))
validate(config, schema="../schemas/config.schema.yaml")  # fills in the defaults


def _check_config():
    names = [s["name"] for s in config["sources"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkflowError(f"config key sources: duplicate source names {duplicates}")
    for i, source in enumerate(config["sources"]):
        kinds = [k for k in ("synthetic", "paths") if k in source]
        if len(kinds) != 1:
            raise WorkflowError(
                f"config key sources[{i}] ({source['name']}): give exactly one of "
                f"'synthetic' or 'paths', got {kinds or 'neither'}"
            )
        if "truth" in source and "paths" not in source:
            raise WorkflowError(
                f"config key sources[{i}].truth: only file sources (paths) take truth files"
            )
    split = config["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise WorkflowError(
            f"config key split: train + val + test must be 1, got {total:g}"
        )


_check_config()
SOURCES = {s["name"]: s for s in config["sources"]}
LATENTS = config["model"]["latent_sizes"]


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
    keep = (
        "name format dataset rgb axes slice_step crop stride pixel_size pixel_unit binary group"
    ).split()
    source = SOURCES[wildcards.source]
    return json.dumps({k: source[k] for k in keep if k in source}, sort_keys=True)


def segmentation_options(wildcards):
    return json.dumps(SOURCES[wildcards.source]["segmentation"], sort_keys=True)


def synthetic_options(wildcards):
    return json.dumps(SOURCES[wildcards.source]["synthetic"], sort_keys=True)


def synthetic_seed(wildcards):
    return SOURCES[wildcards.source]["synthetic"]["seed"] + int(wildcards.index)


def split_fractions():
    split = config["split"]
    return json.dumps({k: split[k] for k in ("train", "val", "test")}, sort_keys=True)


def training_options():
    """Training settings as JSON: a change re-runs training and everything downstream."""
    keys = (
        "epochs batch_size learning_rate seed max_train_images max_val_images device precision"
        " channels_last compile"
    ).split()
    options = {k: config["train"][k] for k in keys}
    options["kl_weight"] = config["model"]["kl_weight"]
    options["kl_warmup_epochs"] = config["model"]["kl_warmup_epochs"]
    return json.dumps(options, sort_keys=True)


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
    ]
