"""The workflow configuration: its JSON schema is the one source of truth for every option,
its type, range and default. The typed parameter classes of the library
(:class:`~microvae.train.TrainConfig`, :class:`~microvae.sample.SampleConfig`, ...) are built
with :func:`parse_options`, which validates against the matching part of the schema, so a
value the workflow refuses is refused by the command line too; ``tests/test_config.py`` checks
that their fields and defaults are the schema's.

Errors name the offending key (``sources[0].synthetic.shape[0]``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .errors import MicrovaeError


def schema_path() -> Path:
    """The configuration schema, package data of microvae (so that an installed package finds
    it; the workflow validates against the same file)."""
    from importlib.resources import files

    return Path(str(files("microvae") / "schema" / "config.schema.yaml"))

# Keys of the schema that configure Snakemake (jobs, resources, per-volume seeds), not the
# library's parameter classes.
WORKFLOW_KEYS = {
    "synthetic": ("n_volumes", "seed"),
    "train": ("threads", "mem_mb", "runtime", "gpus"),
    "model": ("latent_sizes",),
    "diffusion": ("enabled",),
    "volume": ("enabled", "diffusion", "diffusion_steps", "shape", "modes", "n", "periodic",
               "phase_fractions", "seed", "threads"),
}
# The model section's training keys go to TrainConfig beside the train section's.
TRAINING_SECTIONS = ("train", "model")


def key_path(parts) -> str:
    """``['sources', 0, 'name']`` -> ``sources[0].name``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def config_errors(config: dict[str, Any], schema: dict[str, Any], prefix: str = "config key ",
                  root: Iterable[str | int] = ()) -> list[str]:
    """Every schema violation of ``config`` as 'config key K: message', sorted by key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in validator.iter_errors(config):
        message = error.message
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            message = f"unknown key(s): {', '.join(map(repr, unknown))}"
        errors.append(f"{prefix}{key_path([*root, *error.absolute_path])}: {message}")
    return sorted(set(errors))


@functools.cache
def schema() -> dict[str, Any]:
    """The configuration schema (``src/microvae/schema/config.schema.yaml``)."""
    return load_yaml(schema_path())


def whole_numbers(value: Any, node: dict[str, Any]) -> Any:
    """``value`` with every float that the schema ``node`` types as an integer and that is
    whole (40.0) turned into an int: JSON Schema counts 40.0 as an integer, Python's range()
    and slicing do not. Other values are returned as they are (the schema check refuses
    40.5)."""
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, float) and "integer" in kinds and "number" not in kinds \
            and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        return {k: whole_numbers(v, properties.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        items = node.get("items", {})
        return [whole_numbers(v, items) for v in value]
    for option in node.get("oneOf", []):
        if isinstance(value, float) and option.get("type") == "integer" and value.is_integer():
            return int(value)
    return value


def section_schema(section: str) -> dict[str, Any]:
    """The schema of one parameter set, without the keys that only the workflow reads.

    ``section``: a top-level key (``train``, ``sample``, ...), ``source`` (one entry of
    ``sources``), ``synthetic``, ``segmentation`` or ``training`` (train and model together).
    """
    top = schema()["properties"]
    source = top["sources"]["items"]
    if section == "training":
        properties = {}
        for name in TRAINING_SECTIONS:
            properties.update(section_schema(name)["properties"])
        return {"type": "object", "additionalProperties": False, "properties": properties}
    if section == "source":
        part = {**source, "properties": {k: v for k, v in source["properties"].items()
                                         if k not in ("synthetic", "paths", "truth",
                                                      "segmentation")}}
        part.pop("required", None)
        return part
    part = source["properties"][section] if section in ("synthetic", "segmentation") \
        else top[section]
    skip = WORKFLOW_KEYS.get(section, ())
    return {**part, "properties": {k: v for k, v in part["properties"].items() if k not in skip}}


def schema_defaults(section: str) -> dict[str, Any]:
    """The default of every key of a parameter set, as the schema gives it."""
    return {k: v.get("default") for k, v in section_schema(section)["properties"].items()}


def check_options(options: dict[str, Any], section: str, key: str | None = None
                  ) -> dict[str, Any]:
    """Refuse unknown keys and values the schema does not allow; the error names each key
    (as ``key.name``; ``key`` defaults to the section's name). Returns the options with
    whole floats where the schema means integers turned into ints (:func:`whole_numbers`)."""
    if not isinstance(options, dict):
        raise MicrovaeError(f"{key or section}: expected a mapping of options, got {options!r}")
    if section == "training":  # name each key by the section of the config it comes from
        model_keys = set(section_schema("model")["properties"])
        errors = config_errors({k: v for k, v in options.items() if k not in model_keys},
                               section_schema("train"), prefix="", root=["train"])
        errors += config_errors({k: v for k, v in options.items() if k in model_keys},
                                section_schema("model"), prefix="", root=["model"])
    else:
        errors = config_errors(options, section_schema(section), prefix="", root=[key or section])
    if errors:
        raise MicrovaeError("; ".join(errors))
    return whole_numbers(options, section_schema(section))


def check_parameters(parameters: Any, section: str, key: str | None = None) -> None:
    """Check a parameter dataclass against the schema (``None`` = the default, not checked)."""
    values = {}
    for f in fields(parameters):
        value = getattr(parameters, f.name)
        if value is not None:
            values[f.name] = list(value) if isinstance(value, tuple) else value
    check_options(values, section, key)


def parse_options(cls, options: dict[str, Any], section: str, key: str | None = None):
    """An instance of the dataclass ``cls`` from ``options``, checked against the schema;
    keys not given take the class's defaults (which are the schema's)."""
    options = check_options(options, section, key)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names})


def training_options(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a validated workflow config that :class:`TrainConfig` takes."""
    return {k: config[name][k] for name in TRAINING_SECTIONS for k in config[name]
            if k not in WORKFLOW_KEYS.get(name, ())}


def source_options(source: dict[str, Any]) -> dict[str, Any]:
    """The reader options of one entry of ``sources`` (what ``ingest`` takes)."""
    keys = section_schema("source")["properties"]
    return {k: v for k, v in source.items() if k in keys}


def synthetic_options(source: dict[str, Any]) -> dict[str, Any]:
    """The generator parameters of a synthetic source (without its volume count and seed)."""
    return {k: v for k, v in source["synthetic"].items() if k not in WORKFLOW_KEYS["synthetic"]}


def schedule_errors(schedule) -> list[str]:
    """What is wrong with a guidance schedule (``diffusion.guidance_schedule``): it must be
    [phase fraction, weight] pairs, the fractions inside (0, 1) and rising, the weights >= 0."""
    key = "diffusion.guidance_schedule"
    try:
        pairs = [(float(fraction), float(weight)) for fraction, weight in schedule]
    except (TypeError, ValueError):
        pairs = []
    if not pairs:
        return [f"{key}: expected [phase fraction, weight] pairs, got {schedule!r}"]
    fractions = [fraction for fraction, _ in pairs]
    weights = [weight for _, weight in pairs]
    errors = []
    if not all(0 < f < 1 for f in fractions) or \
            any(b <= a for a, b in zip(fractions, fractions[1:])):
        errors.append(f"{key}: the phase fractions {fractions} must lie between 0 and 1 and "
                      "rise from pair to pair")
    if any(w < 0 for w in weights):
        errors.append(f"{key}: weights {weights} must be >= 0")
    return errors


def cross_field_errors(config: dict[str, Any]) -> list[str]:
    """Rules across keys that a JSON schema does not express well (on a config that passed
    the schema, with its defaults filled in)."""
    errors = []
    names = [s.get("name") for s in config.get("sources", [])]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        errors.append(f"config key sources: duplicate source names {duplicates}")
    for i, source in enumerate(config.get("sources", [])):
        kinds = [k for k in ("synthetic", "paths") if k in source]
        if len(kinds) != 1:
            errors.append(f"config key sources[{i}] ({source.get('name')}): give exactly one of "
                          f"'synthetic' or 'paths', got {kinds or 'neither'}")
        if "truth" in source and "paths" not in source:
            errors.append(f"config key sources[{i}].truth: only file sources (paths) take truth "
                          "files")
        scale = source.get("scale")
        if isinstance(scale, list) and len(scale) == 2 and not scale[1] > scale[0]:
            errors.append(f"config key sources[{i}].scale: [lo, hi] needs lo < hi, got {scale}")
    train = config.get("train", {})
    if all(train.get(k) is None for k in ("epochs", "max_steps", "max_minutes")):
        errors.append("config key train: epochs, max_steps and max_minutes are all null, so "
                      "training would never stop; set at least one of them")
    architecture = config.get("model", {}).get("architecture", "auto")
    if train.get("crop_size") is not None and architecture == "auto":
        errors.append("config key train.crop_size: model.architecture auto chooses the crop size "
                      "with the model (twice the tile for a conv model); set model.architecture: "
                      "conv to set train.crop_size, or leave crop_size null")
    if config.get("sample", {}).get("sizes") and \
            architecture != "conv":
        errors.append("config key sample.sizes: images larger than the training tiles need "
                      "model.architecture: conv (Table 1's Dense layers fix the output size)")
    sample = config.get("sample", {})
    prior_enabled = config.get("diffusion", {}).get("enabled", True)
    diffusion = config.get("model", {}).get("architecture") == "conv" and prior_enabled
    odd = [size for size in sample.get("sizes", []) if size % 32]
    if diffusion and sample.get("periodic") and odd:
        errors.append(f"config key sample.sizes: {odd} px are not multiples of 32, which a "
                      "periodic diffusion sample needs (its grid of 8 px cells is halved "
                      "twice); use multiples of 32 or diffusion.enabled: false")
    if sample.get("phase_fractions") and not prior_enabled:
        errors.append("config key sample.phase_fractions: generation at a target phase "
                      "fraction goes through the diffusion prior: it needs diffusion.enabled: "
                      "true")
    if sample.get("graded") and not diffusion:
        errors.append("config key sample.graded: a graded map goes through the diffusion prior "
                      "of a conv model: it needs model.architecture: conv and "
                      "diffusion.enabled: true")
    schedule = config.get("diffusion", {}).get("guidance_schedule")
    if schedule is not None:
        errors += [f"config key {error}" for error in schedule_errors(schedule)]
    volume = config.get("volume", {})
    if volume.get("phase_fractions") and not volume.get("diffusion", True):
        errors.append("config key volume.phase_fractions: volumes at a target phase fraction "
                      "are drawn from the 3-D diffusion prior: they need volume.diffusion: true")
    split = config.get("split", {})
    if all(k in split for k in ("train", "val", "test")):
        total = split["train"] + split["val"] + split["test"]
        if abs(total - 1.0) > 1e-6:
            errors.append(f"config key split: train + val + test must be 1, got {total:g}")
        for name, needed_by in (("train", "training"),
                                ("val", "early stopping, the mixture prior and every choice "
                                        "the evaluation makes"),
                                ("test", "the evaluation (the real images it judges against)")):
            if split[name] <= 0:
                errors.append(f"config key split.{name}: 0, but {needed_by} needs the {name} "
                              "split; give it a fraction above 0")
    return errors


def load_yaml(path: str | os.PathLike) -> Any:
    """Load a YAML file with the safe loader (no Python objects are built)."""
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise MicrovaeError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise MicrovaeError(f"{path}: not valid YAML ({exc})") from exc


def prepend_pythonpath(path: str | os.PathLike) -> None:
    """Put ``path`` first on PYTHONPATH of this process (and so of the jobs it starts),
    so that ``python -m microvae`` finds this checkout's library in any environment."""
    entries = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(path) not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *entries])
