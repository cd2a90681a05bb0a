"""Extension point of the command line: experiment runners register here.

Each module in [`COMMAND_MODULES`][COMMAND_MODULES] defines ``RUNNERS``, a tuple of
[`Runner`][.skeleton.Runner] descriptions (config dataclass, run function, help): the
skeleton generates their flags and shared handling, as ``adjinv experiment NAME`` or,
with ``command=True``, as a top-level ``adjinv NAME``. A module may instead define a
hand-written ``register(sub, experiment_sub)``, where ``sub`` is the top-level subparser
set and ``experiment_sub`` has ``add_parser(name, …)`` for ``adjinv experiment NAME``; a
handler is set with ``parser.set_defaults(func=callable(args))`` and raises
``AdjinvError`` for user errors, like the built-in commands.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from .skeleton import Runner, add_command

# Modules (relative to this package) that add commands.
COMMAND_MODULES: list[str] = [
    "attention", "cam_compare", "compression", "ecr", "fg_paradox", "fidelity", "invert_dataset", "ood",
    "reconstruction", "superposition",
]


class _ExperimentGroup:
    """Creates ``adjinv experiment`` on first use, so it exists only with runners."""

    def __init__(self, sub: argparse._SubParsersAction) -> None:
        self._sub = sub
        self._group: argparse._SubParsersAction | None = None

    def add_parser(self, name: str, **kw: Any) -> argparse.ArgumentParser:
        """Like ``subparsers.add_parser`` for ``adjinv experiment NAME``."""
        if self._group is None:
            exp = self._sub.add_parser(
                "experiment", help="run one of the paper's experiments",
                description="Experiment runners: config in; results.json and figures out.")
            self._group = exp.add_subparsers(dest="experiment", required=True, metavar="NAME")
        return self._group.add_parser(name, **kw)


def runners() -> list[Runner]:
    """Every runner of [`COMMAND_MODULES`][COMMAND_MODULES], in order."""
    return [r for name in COMMAND_MODULES
            for r in getattr(importlib.import_module(f".{name}", __package__), "RUNNERS", ())]


def register_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``adjinv experiment …`` and any other registered commands to ``sub``."""
    exp_sub = _ExperimentGroup(sub)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        for runner in getattr(module, "RUNNERS", ()):
            add_command(sub if runner.command else exp_sub, runner)
        if hasattr(module, "register"):
            module.register(sub, exp_sub)
