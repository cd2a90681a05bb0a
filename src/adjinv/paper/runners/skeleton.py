"""One skeleton for every runner: config dataclass → command line generated from it →
run (cache, ``results.json``, ``table.md``, figures) → the closing ``wrote …`` line.

A [`Runner`][Runner] names the command, its config dataclass and its run function
``run(cfg, out, log=…) -> results``. [`add_command()`][add_command] builds the argparse subcommand
from the dataclass: one flag per field, the value type from the annotation
(``X | None`` is ``X``; ``bool`` a switch; ``list[X]`` takes several values), the help
text from ``field(metadata={"help": …})`` with the default appended. What every command
shares is here and nowhere else: ``--out`` under the output contract of
[`adjinv.outdir`][adjinv.outdir] (with ``--overwrite``; a config's ``check()`` runs before it),
``--config`` (a JSON object of config fields; flags override it, unknown keys and values of
the wrong type are an error), ``--threads``, joining a ``torchrun``
group, progress lines through ``logging`` on the main rank only (the CLI shows them
on stderr), and the summary on stdout.

Field metadata (every key optional; [`option()`][option] takes them as keywords):

``help``
    the flag's help; `` (default X)`` is appended unless the text speaks of a default.
``flag``
    the flag's spelling (default ``--`` + the field name with ``-`` for ``_``).
``append``
    a list or dict field filled by a repeatable flag, one value each (default for
    lists: ``nargs="+"``, several values after one flag).
``choices``, ``metavar``
    as in argparse.
``type``
    argparse type of one value, where the annotation says something else (dict fields).
``parse``
    turns the parsed flag value into the field value; raises ``AdjinvError`` when it
    cannot (e.g. ``--randomize 1 all`` → ``[1, "all"]``).
``const``
    a bool field's value when its flag is given (default True: ``--no-x`` flags use False).
``clear``
    ``(flag, help)``: a second flag that sets a list field to ``[]`` (``--no-shift``).
``group``
    title of the argparse group the flag is listed under in ``--help``.
``positional``
    the field is a positional argument, not a flag.
``input``
    the field names a folder the run reads: ``--out`` may not be it nor lie inside it.

A dict field's flag values update the keys they name in the JSON/default dict; every
other flag replaces the field's value.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...distributed import init_from_env, is_main
from ...errors import AdjinvError
from ...outdir import OutputFile, OutputFolder
from .common import Log, load_config, quiet_log

Results = dict[str, Any]
RunFn = Callable[..., Results]  # run(cfg, out, *, log=…) -> results


@dataclass(frozen=True)
class Variant:
    """A switch that runs another function on the same config, on its own (``ood
    --figure-only``): no torchrun group, no ``write`` or ``summary``, its own outputs."""

    flag: str
    help: str
    run: RunFn
    outputs: tuple[str, ...]

    @property
    def dest(self) -> str:
        """The argparse destination of [`flag`][flag]."""
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Runner:
    """A command of the paper's harness, described once; [`add_command()`][add_command] builds it."""

    name: str  # adjinv experiment NAME (or adjinv NAME with ``command=True``)
    config: type  # a dataclass: one flag per field
    run: RunFn  # run(cfg, out, log=…) -> results; progress goes to log
    help: str  # one line in ``adjinv experiment --help``
    description: str
    epilog: str = ""
    # files named in the closing ``wrote OUT/a, b and c in N s`` line (none: no such line)
    outputs: tuple[str, ...] = ("results.json", "table.md")
    # writes what run did not (table.md, figures), on the main rank after run
    write: Callable[[Results, Path], object] | None = None
    # lines printed on stdout before the ``wrote`` line (verdicts, a custom summary)
    summary: Callable[[Results, Path], list[str]] | None = None
    distributed: bool = False  # join a torchrun group before running (docs/cluster.md)
    command: bool = False  # True: a top-level ``adjinv NAME``, not an experiment
    out_help: str = "output folder"
    out_default: str | None = None  # None: --out is required
    variants: tuple[Variant, ...] = ()
    out_file: bool = False  # --out is one file (a checkpoint), not a folder


def option(default: Any = None, help: str = "", **flag: Any) -> Any:
    """A config field with its flag's ``help`` and any other metadata key above as a
    keyword; a list or dict default is copied for every instance."""
    meta = {"help": help, **flag}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads`` from a ``--threads`` flag (None: torch's choice)."""
    if n is not None:
        if n < 1:
            raise AdjinvError("--threads must be at least 1")
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- flags
def _value_type(hint: Any) -> Any:
    """The type of a flag's value: ``X | None`` → ``X``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help(f: dataclasses.Field, shown_default: bool) -> str:
    text = f.metadata.get("help", "")
    d = _default(f)
    if shown_default and "default" not in text and d is not dataclasses.MISSING \
            and d is not None and d is not False and d != [] and d != {}:
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        text = f"{text} (default {shown})" if text else f"default {shown}"
    return text.replace("%", "%%")


def flag_name(f: dataclasses.Field) -> str:
    """The flag of a config field: its metadata ``flag``, else ``--field-name``."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _add_field(p: argparse.ArgumentParser | argparse._ArgumentGroup, f: dataclasses.Field,
               hint: Any) -> None:
    meta = f.metadata
    base = _value_type(hint)
    origin = typing.get_origin(base) or base
    kw: dict[str, Any] = {"help": _help(f, base is not bool)}
    for k in ("choices", "metavar"):
        if k in meta:
            kw[k] = meta[k]
    if meta.get("positional"):
        p.add_argument(f.name, type=meta.get("type", base), **kw)
        return
    kw.update(dest=f.name, default=None)
    if "flag" in meta and "choices" not in meta and base is not bool:
        kw.setdefault("metavar", meta["flag"].lstrip("-").replace("-", "_").upper())
    if base is bool:
        kw.update(action="store_const", const=meta.get("const", True))
    elif origin in (list, dict):
        args = typing.get_args(base)
        kw["type"] = meta.get("type", args[0] if origin is list and args else str)
        if meta.get("append"):
            kw["action"] = "append"
        elif origin is list:
            kw["nargs"] = "+"
        elif "parse" not in meta:
            raise TypeError(f"{f.name}: a dict field needs 'append' or 'parse' metadata")
    elif base in (int, float, str):
        kw["type"] = meta.get("type", base)
    else:
        raise TypeError(f"{f.name}: no flag for a field of type {base!r}; give metadata 'type' "
                        "and 'parse'")
    p.add_argument(flag_name(f), **kw)
    if "clear" in meta:
        flag, text = meta["clear"]
        p.add_argument(flag, dest=f.name, action="store_const", const=[], help=text)


def add_config_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag (or positional argument) per field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        title = f.metadata.get("group")
        target = p if title is None else groups.setdefault(title, p.add_argument_group(title))
        _add_field(target, f, hints[f.name])


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config: defaults, then the JSON file ``args.config``, then the flags given."""
    over: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None and "parse" in f.metadata:
            v = f.metadata["parse"](v)
        over[f.name] = v
    return load_config(cls, getattr(args, "config", None), over)


# ----------------------------------------------------------------------------- commands
def _wrote(out: Path, files: Sequence[str], seconds: float) -> str:
    named = [str(out / files[0]), *files[1:]]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"wrote {listed} in {seconds:.1f} s"


def execute(runner: Runner, args: argparse.Namespace) -> Results:
    """What every command does with its parsed arguments: threads, config, torchrun rank,
    run with a logger on the main rank, write, summarise on stdout."""
    set_threads(getattr(args, "threads", None))
    cfg = config_from_args(runner.config, args)
    variant = next((v for v in runner.variants if getattr(args, v.dest, False)), None)
    if runner.distributed and variant is None:
        init_from_env()  # under torchrun: one rank of the group (docs/cluster.md)
    log: Log = logging.getLogger(runner.run.__module__).info if is_main() else quiet_log
    out = Path(args.out)
    t0 = time.perf_counter()
    outputs = runner.outputs if variant is None else variant.outputs
    if callable(getattr(cfg, "check", None)):
        cfg.check()  # refuse impossible values before --out is touched
    with _claim(runner, cfg, out, getattr(args, "overwrite", False), outputs):
        results = (variant or runner).run(cfg, out, log=log)
        if not is_main():
            return results
        if variant is None and runner.write is not None:
            runner.write(results, out)
    lines = runner.summary(results, out) if variant is None and runner.summary is not None else []
    if outputs:
        lines.append(_wrote(out, outputs, time.perf_counter() - t0))
    for line in lines:
        print(line)
    return results


def _inputs(cfg: Any) -> list[str]:
    """The folders a run reads: the values of its config's ``input`` fields."""
    return [str(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
            if f.metadata.get("input") and getattr(cfg, f.name)]


def _claim(runner: Runner, cfg: Any, out: Path, overwrite: bool,
           outputs: Sequence[str]) -> OutputFile | OutputFolder:
    """The output contract (adjinv.outdir) for ``out``: a file or a folder."""
    if runner.out_file:
        return OutputFile(out, inputs=_inputs(cfg))
    return OutputFolder(out, overwrite, inputs=_inputs(cfg),
                        files=[o for o in outputs if "/" not in o and "." in o])


def build_parser(p: argparse.ArgumentParser, runner: Runner) -> argparse.ArgumentParser:
    """Fill ``p`` with ``runner``'s flags and handler."""
    if runner.out_default is None:
        p.add_argument("--out", required=True, help=runner.out_help)
    else:
        p.add_argument("--out", default=runner.out_default,
                       help=f"{runner.out_help} (default {runner.out_default})")
    if not runner.out_file:
        p.add_argument("--overwrite", action="store_true",
                       help="write into an existing non-empty folder that adjinv did not create "
                            "(files with adjinv's output names are replaced; nothing else is)")
    p.add_argument("--config", metavar="JSON",
                   help=f"JSON file with {runner.config.__name__} fields; flags override it")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; on a "
                                               "busy machine 1 can be several times faster)")
    add_config_flags(p, runner.config)
    for v in runner.variants:
        p.add_argument(v.flag, dest=v.dest, action="store_true", help=v.help)
    p.set_defaults(func=lambda args: execute(runner, args))
    return p


def add_command(parent: Any, runner: Runner) -> argparse.ArgumentParser:
    """Add ``runner`` to ``parent`` (an ``add_parser`` provider: the top-level subparsers
    or the ``adjinv experiment`` group)."""
    p = parent.add_parser(runner.name, help=runner.help, description=runner.description,
                          epilog=runner.epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    return build_parser(p, runner)
