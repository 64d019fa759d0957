"""The ``microvae`` command line: one sub-command per pipeline stage, plus user tools.

Errors in the input (a :class:`MicrovaeError`) print one line naming the file or key and exit
with status 1, without a traceback. Outputs are written atomically: a failed command leaves
no output file behind and never replaces a good one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .errors import MicrovaeError

log = logging.getLogger("microvae")


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def cmd_synthesize(args: argparse.Namespace) -> None:
    from .stages import synthesize

    synthesize(args.params, args.seed, args.iq, args.phase)


def cmd_ingest(args: argparse.Namespace) -> None:
    from .stages import ingest

    n = ingest(args.files, args.out, args.source, args.image_size, truth=args.truth)
    log.info("ingested %d tiles of %dx%d px into %s", n, args.image_size, args.image_size,
             args.out)


def cmd_segment(args: argparse.Namespace) -> None:
    from .stages import segment_file

    summary = segment_file(args.input, args.out, args.qa, args.params, figure=args.figure)
    log.info("segmented %s: %s", args.input, json.dumps(summary, sort_keys=True))


def cmd_pack(args: argparse.Namespace) -> None:
    from .stages import pack_files

    counts = pack_files(args.inputs, args.out, args.fractions, args.seed, figure=args.figure)
    log.info("packed %s: %s", args.out, counts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="microvae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synthesize", help="write one synthetic dual-phase steel volume")
    p.add_argument("--params", type=_json, required=True, help="generator parameters (JSON)")
    p.add_argument("--seed", type=int, required=True, help="random seed of this volume")
    p.add_argument("--iq", required=True, help="output: 8-bit image-quality volume (.tif)")
    p.add_argument("--phase", required=True, help="output: true phase volume (.tif)")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("ingest", help="read images/volumes of one source and cut tiles")
    p.add_argument("--files", nargs="+", required=True, help="image or volume files")
    p.add_argument("--truth", nargs="*", default=None, help="true phase maps, one per file")
    p.add_argument("--source", type=_json, required=True, help="source options (JSON)")
    p.add_argument("--image-size", type=int, required=True, help="tile edge length (px)")
    p.add_argument("--out", required=True, help="output HDF5 of grey tiles")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("segment", help="binary phase maps of ingested tiles, with QA")
    p.add_argument("--input", required=True, help="ingested HDF5")
    p.add_argument("--params", type=_json, required=True, help="segmentation options (JSON)")
    p.add_argument("--out", required=True, help="output HDF5 of binary tiles")
    p.add_argument("--qa", required=True, help="output JSON summary of the QA")
    p.add_argument("--figure", default=None, help="output PNG of example tiles")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("pack", help="train/val/test data set from segmented sources")
    p.add_argument("--inputs", nargs="+", required=True, help="segmented HDF5 files")
    p.add_argument("--fractions", type=_json, required=True,
                   help='split fractions, e.g. {"train": 0.8, "val": 0.1, "test": 0.1}')
    p.add_argument("--seed", type=int, required=True, help="seed of the split")
    p.add_argument("--out", required=True, help="output data set HDF5")
    p.add_argument("--figure", default=None, help="output PNG: which part of each file went "
                   "to which split")
    p.set_defaults(func=cmd_pack)

    from . import cli_model

    cli_model.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        args.func(args)
    except MicrovaeError as exc:
        print(f"microvae {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"microvae {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
