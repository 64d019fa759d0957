"""Sub-commands of the model stages (train, sample, evaluate, summarize)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the model sub-commands on the ``microvae`` parser."""
