"""The schema is the one source of every option: the library's parameter classes have its
keys and defaults, their checks are its ranges, and the cross-field rules are unit-tested."""

import copy
from dataclasses import MISSING, fields

import pytest

from conftest import REPO, TINY_CONFIG
from microvae.config import (
    WORKFLOW_KEYS,
    config_errors,
    cross_field_errors,
    schema,
    schema_defaults,
    schema_path,
    section_schema,
    source_options,
    training_options,
)
from microvae.diffusion import DiffusionConfig
from microvae.errors import MicrovaeError
from microvae.ingest import SourceOptions
from microvae.sample import SampleConfig
from microvae.segment import MORPHOLOGY_DEFAULTS, SegmentationParameters
from microvae.synthetic import SteelParameters
from microvae.train import TrainConfig
from microvae.volume_vae import VolumeTrainSettings

CLASSES = [(SteelParameters, "synthetic"), (SourceOptions, "source"),
           (SegmentationParameters, "segmentation"), (TrainConfig, "training"),
           (SampleConfig, "sample"), (DiffusionConfig, "diffusion"),
           (VolumeTrainSettings, "volume")]


def default_of(f):
    value = f.default_factory() if f.default_factory is not MISSING else f.default
    return list(value) if isinstance(value, tuple) else value


def test_the_workflow_reads_the_library_schema():
    assert schema_path() == REPO / "src" / "microvae" / "schema" / "config.schema.yaml"
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "validate(config, schema=str(schema_path()))" in common


def test_whole_floats_become_integers_where_the_schema_says_integer():
    """Issue 26: JSON Schema counts 40.0 as an integer; range() and slicing do not."""
    from microvae.config import whole_numbers

    config = filled({**TINY_CONFIG, "image_size": 16.0, "sources": [
        {**TINY_CONFIG["sources"][0], "stride": 8.0, "crop": {"top": 2.0}, "axes": [0.0]}]})
    fixed = whole_numbers(config, schema())
    source = fixed["sources"][0]
    assert type(fixed["image_size"]) is int and type(source["stride"]) is int
    assert type(source["crop"]["top"]) is int and type(source["axes"][0]) is int
    assert type(fixed["model"]["kl_weight"]) is float  # a number stays a number
    options = SourceOptions.from_options({"name": "a", "stride": 8.0, "slice_step": 2.0})
    assert type(options.stride) is int and type(options.slice_step) is int


@pytest.mark.parametrize("cls,section", CLASSES)
def test_parameter_classes_have_the_schema_keys_and_defaults(cls, section):
    defaults = schema_defaults(section)
    assert {f.name for f in fields(cls)} == set(defaults)
    for f in fields(cls):
        if f.name == "name":  # required in the schema, no default
            continue
        expected = defaults[f.name]
        if section == "segmentation" and f.name == "phase":
            expected = None  # 'auto' in the config is None (the default of the input kind)
        assert default_of(f) == expected, f.name


def test_morphology_defaults_are_the_ones_the_schema_describes():
    properties = section_schema("segmentation")["properties"]
    for key, grey in MORPHOLOGY_DEFAULTS["grey"].items():
        binary = MORPHOLOGY_DEFAULTS["binary"][key]
        assert f"{grey} for grey images, {binary} for phase maps" in properties[key]["description"]


def boundary_cases():
    """(class, section, key, value at the schema's limit, value just past it)."""
    for cls, section in CLASSES:
        for key, spec in section_schema(section)["properties"].items():
            if spec.get("type") == "integer" or spec.get("type") == ["integer", "null"]:
                if "minimum" in spec:
                    yield cls, section, key, spec["minimum"], spec["minimum"] - 1
            elif "exclusiveMinimum" in spec:
                yield cls, section, key, spec["exclusiveMinimum"] + 1e-3, spec["exclusiveMinimum"]


@pytest.mark.parametrize("cls,section,key,good,bad", list(boundary_cases()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_class_checks_are_the_schema_ranges(cls, section, key, good, bad):
    cls.from_options({key: good})
    with pytest.raises(MicrovaeError, match=key):
        cls.from_options({key: bad})


@pytest.mark.parametrize("cls,section", CLASSES)
def test_unknown_keys_are_refused(cls, section):
    with pytest.raises(MicrovaeError, match=r"unknown key\(s\): 'typo'"):
        cls.from_options({"typo": 1})


def test_constructed_parameters_are_checked_too():
    with pytest.raises(MicrovaeError, match="train.epochs"):
        TrainConfig(epochs=0).check()
    with pytest.raises(MicrovaeError, match="sample.n_steps"):
        SampleConfig(n_steps=1).check()
    with pytest.raises(MicrovaeError, match="synthetic.martensite_fraction"):
        SteelParameters(martensite_fraction=1.0).check()


def test_workflow_keys_are_in_the_schema():
    top = schema()["properties"]
    for section, keys in WORKFLOW_KEYS.items():
        part = top["sources"]["items"]["properties"][section] if section == "synthetic" \
            else top[section]
        assert set(keys) <= set(part["properties"])


def filled(config):
    """A config with the schema's defaults, as Snakemake's validate fills them."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(schema_path()))
    return config


def test_training_options_of_the_workflow_build_a_train_config():
    config = filled(TINY_CONFIG)
    options = training_options(config)
    assert "threads" not in options and "latent_sizes" not in options
    cfg = TrainConfig.from_options(options)
    assert cfg.epochs == 2 and cfg.kl_weight == 0.1 and cfg.batch_size == 16


def test_source_options_of_the_workflow_build_source_options():
    source = filled(TINY_CONFIG)["sources"][0]
    options = SourceOptions.from_options(source_options(source))
    assert options.name == "tiny" and options.axes == (0,) and options.pixel_unit == "um"


@pytest.mark.parametrize("change,message", [
    (lambda c: c["sources"].append(dict(c["sources"][0])), "duplicate source names ['tiny']"),
    (lambda c: c["sources"][0].update(paths=["a.png"]), "give exactly one of 'synthetic' or 'paths'"),
    (lambda c: c["sources"][0].pop("synthetic"), "got neither"),
    (lambda c: c["sources"][0].update(truth=["t.png"]), "only file sources (paths) take truth"),
    (lambda c: c["split"].update(train=0.5), "train + val + test must be 1, got 0.9"),
    (lambda c: c["split"].update(train=0.8, test=0.0), "split.test: 0, but the evaluation"),
    (lambda c: c["split"].update(train=0.8, val=0.0), "split.val: 0, but early stopping"),
    (lambda c: c["train"].update(epochs=None), "training would never stop"),
    (lambda c: c["sample"].update(sizes=[256]), "sample.sizes: images larger than the training "
                                                "tiles need model.architecture: conv"),
    (lambda c: c["model"].update(architecture="auto") or c["sample"].update(sizes=[256]),
     "sample.sizes: images larger than the training tiles need model.architecture: conv"),
    (lambda c: c["model"].update(architecture="auto") or c["train"].update(crop_size=64),
     "train.crop_size: model.architecture auto chooses the crop size"),
    (lambda c: c["diffusion"].update(guidance_schedule=[[0.3, 1.0], [0.2, 0.5]]),
     "diffusion.guidance_schedule: the phase fractions [0.3, 0.2] must lie between 0 and 1 "
     "and rise"),
    (lambda c: c["diffusion"].update(guidance_schedule=[[0.2, 1.0], [1.5, 0.5]]),
     "diffusion.guidance_schedule"),
])
def test_cross_field_rules(change, message):
    config = filled(TINY_CONFIG)
    assert cross_field_errors(config) == []
    change(config)
    errors = cross_field_errors(config)
    assert len(errors) == 1 and message in errors[0]


def test_schema_errors_name_the_key():
    config = copy.deepcopy(TINY_CONFIG)
    config["sources"][0]["synthetic"]["shape"] = [4, 64, 64]
    config["train"]["epoch"] = 3
    errors = config_errors(config, schema())
    assert errors == ["config key sources[0].synthetic.shape[0]: 4 is less than the minimum of 8",
                      "config key train: unknown key(s): 'epoch'"]


def test_config_readme_documents_every_key_of_the_schema():
    """config/README.md is written by hand: every key of the schema must appear in it (in
    backticks, alone or as `section.key`), so that no option goes undocumented."""
    text = (REPO / "config" / "README.md").read_text()

    def keys(node, prefix=""):
        for name, child in node.get("properties", {}).items():
            yield name, prefix + name
            yield from keys(child, prefix + name + ".")
            yield from keys(child.get("items", {}), prefix + name + ".")

    missing = [full for name, full in keys(schema())
               if not any(form in text for form in (f"`{name}`", f"`{full}`", f"{name}`",
                                                    f"`{name}."))]
    assert not missing, missing


def test_config_readme_states_the_schemas_defaults():
    """The default column of each section's table in config/README.md starts with the schema's
    default (a drifted default fails here)."""
    import re

    text = (REPO / "config" / "README.md").read_text()
    checked = 0
    for section in ("split", "model", "train", "sample", "diffusion", "export", "evaluate",
                    "volume"):
        body = text.split(f"## `{section}`\n", 1)[1].split("\n## ", 1)[0]
        properties = schema()["properties"][section]["properties"]
        for row in re.findall(r"^\| `(\w+)` \|.*\| ([^|]*) \|$", body, re.M):
            key, documented = row
            if key not in properties or "default" not in properties[key]:
                continue
            default = properties[key]["default"]
            first = documented.strip().split(" (")[0].strip("`").replace(" ", "")
            if isinstance(default, list):
                expected = "[" + ",".join(str(v) for v in default) + "]"
            elif default is None or isinstance(default, bool):
                expected = {None: "null", True: "true", False: "false"}[default]
            else:
                expected = default
            assert first == str(expected), (section, key, documented, default)
            checked += 1
    assert checked >= 40, checked
