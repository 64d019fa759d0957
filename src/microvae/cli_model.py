"""Sub-commands of the model stages (train, sample, evaluate, summarize)."""

from __future__ import annotations

import argparse
import json


def _json(text: str) -> object:
    return json.loads(text)


def cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train_model

    settings = dict(args.params)
    cfg = TrainConfig(**{k: v for k, v in settings.items()
                         if k in TrainConfig.__dataclass_fields__})
    if args.threads:
        cfg.threads = args.threads
    train_model(args.dataset, args.latent, cfg, args.checkpoint_dir, args.model, args.history,
                args.loss_figure, stop_after_epoch=args.stop_after_epoch)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_sample(args: argparse.Namespace) -> None:
    import logging

    from .sample import FIGURES, MODES, SampleConfig, export_binary, sample_to_file, write_figures

    modes = MODES if "all" in args.mode else tuple(dict.fromkeys(args.mode))
    if any(m != "prior" for m in modes) and args.dataset is None:
        from .errors import MicrovaeError

        raise MicrovaeError(f"--mode {' '.join(modes)} needs --dataset (real images to encode)")
    cfg = SampleConfig(n_prior=args.n, n_posterior_images=args.n_images, n_draws=args.draws,
                       noise_sigmas=args.sigmas, n_pairs=args.pairs, n_steps=args.steps,
                       seed=args.seed)
    run = sample_to_file(args.model, args.out, args.dataset, cfg, modes, split=args.split)
    arrays = run.arrays
    log = logging.getLogger("microvae.sample")
    log.info("wrote %s: %s", args.out, {k: v.shape for k, v in arrays.items()})
    if args.figures_dir:
        wanted = [f for f in FIGURES if f == "prior" or run.real is not None]
        write_figures(run.model, arrays, run.real, {f: f"{args.figures_dir}/{f}.png" for f in wanted
                                                    if f == "latent_map" or f in modes})
    if args.export_dir:
        for name in ("prior", "aggregate", "posterior"):
            if name in arrays:
                files = export_binary(arrays[name], args.export_dir, args.export_format, name)
                log.info("exported %d %s file(s) to %s", len(files), name, args.export_dir)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the model sub-commands on the ``microvae`` parser."""
    p = sub.add_parser("train", help="train one VAE on a packed data set")
    p.add_argument("--dataset", required=True, help="packed data set (HDF5)")
    p.add_argument("--latent", type=int, required=True, help="latent size")
    p.add_argument("--params", type=_json, default={},
                   help="training settings (JSON): epochs, batch_size, learning_rate, kl_weight, "
                        "kl_warmup_epochs, seed, max_train_images, device, precision, "
                        "channels_last, compile")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch")
    p.add_argument("--checkpoint-dir", required=True,
                   help="folder of the resumable checkpoint (kept between runs)")
    p.add_argument("--model", required=True, help="output: best model (.pt)")
    p.add_argument("--history", required=True, help="output: per-epoch history (.csv)")
    p.add_argument("--loss-figure", default=None, help="output: loss curves (.png)")
    p.add_argument("--stop-after-epoch", type=int, default=None,
                   help="stop after this epoch without writing the outputs (tests)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "sample", help="generate microstructures from a trained model",
        description="Generate new microstructures from a trained VAE and write them to an HDF5 "
                    "file of phase-1 probabilities (float16 in [0,1]). Example: microvae sample "
                    "--model results/models/latent_12/model.pt --n 500 --out my_samples.h5")
    p.add_argument("--model", required=True, help="trained model (.pt) from the train stage")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--mode", nargs="+", default=["prior"],
                   choices=["all", "prior", "aggregate", "posterior", "noise", "interpolation"],
                   help="what to generate: prior (z ~ N(0,I)), aggregate (z from the Gaussian "
                        "fitted to the encoded training images), posterior (eq. 1 on test "
                        "images), noise (z_mean + sigma*eps), interpolation (midpoints and paths), "
                        "or all; every mode but prior needs --dataset (default: prior)")
    p.add_argument("--dataset", default=None, help="packed data set whose images are encoded")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="split of --dataset to encode (default: test)")
    p.add_argument("--n", type=_count, default=500,
                   help="number of prior samples, and of aggregate samples (default 500)")
    p.add_argument("--n-images", type=_count, default=64,
                   help="images encoded for posterior and noise modes (default 64)")
    p.add_argument("--draws", type=_count, default=8, help="draws per encoded image (default 8)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                   help="latent noise levels of the noise mode (default 0.5 1 2)")
    p.add_argument("--pairs", type=_count, default=8, help="interpolation pairs (default 8)")
    p.add_argument("--steps", type=_count, default=9,
                   help="points on each interpolation path, endpoints included (default 9)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--figures-dir", default=None, help="also write PNG figures to this folder")
    p.add_argument("--export-dir", default=None,
                   help="also write binarised (at 0.5) prior/posterior images to this folder")
    p.add_argument("--export-format", default="png", choices=["png", "tif", "npy"],
                   help="format of --export-dir files: one PNG/TIFF per image or one NPY stack")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="statistics of generated against real microstructures")
    p.add_argument("--samples", required=True, help="samples HDF5 from the sample stage")
    p.add_argument("--dataset", required=True, help="packed data set (its test split is real)")
    p.add_argument("--latent", type=int, default=None, help="latent size (for labels)")
    p.add_argument("--seed", type=int, default=0, help="seed of the real-vs-real split")
    p.add_argument("--metrics", required=True, help="output: metrics.json")
    p.add_argument("--s2", required=True, help="output: S2 curves (.csv)")
    p.add_argument("--figures-dir", default=None,
                   help="also write s2.png, phase_fraction.png and chords.png here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("summarize", help="summary table and figures across latent sizes")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each latent size")
    p.add_argument("--histories", nargs="+", required=True,
                   help="history.csv of each latent size, same order as --metrics")
    p.add_argument("--latents", type=int, nargs="+", required=True, help="latent sizes, same order")
    p.add_argument("--table", required=True, help="output: summary.csv")
    p.add_argument("--comparison-figure", required=True, help="output: latent-size comparison .png")
    p.add_argument("--loss-figure", required=True, help="output: loss curves of all sizes .png")
    p.set_defaults(func=cmd_summarize)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_files

    figures = {}
    if args.figures_dir:
        figures = {k: f"{args.figures_dir}/{k}.png" for k in ("s2", "phase_fraction", "chords")}
    evaluate_files(args.samples, args.dataset, args.metrics, args.s2, figures, seed=args.seed,
                   latent=args.latent)


def cmd_summarize(args: argparse.Namespace) -> None:
    from .errors import MicrovaeError
    from .evaluate import summarize_files

    if not len(args.metrics) == len(args.histories) == len(args.latents):
        raise MicrovaeError("summarize: --metrics, --histories and --latents differ in length")
    summarize_files(args.metrics, dict(zip(args.latents, args.histories)), args.table,
                    args.comparison_figure, args.loss_figure)
