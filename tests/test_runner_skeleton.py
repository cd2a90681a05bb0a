"""The runners' shared skeleton (adjinv.paper.runners.skeleton): every config field of every
registered runner has a flag, ``--help`` works, flags and JSON round-trip into the config,
and the commands quoted in the docs and epilogs still parse."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adjinv.cli import _log_to_stderr, build_parser, main
from adjinv.errors import AdjinvError
from adjinv.paper.runners.commands import runners
from adjinv.paper.runners.common import quiet_log
from adjinv.paper.runners.skeleton import Runner, Variant, config_from_args
from adjinv.paper.runners.skeleton import build_parser as runner_parser

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = runners()


def _argv(r: Runner) -> list[str]:
    return [r.name] if r.command else ["experiment", r.name]


def test_every_module_registers_a_runner():
    names = {r.name for r in RUNNERS}
    assert {"attention", "train-head", "cam-compare", "compression", "ecr", "fg-paradox",
            "fidelity", "invert-dataset", "ood", "reconstruction", "superposition"} <= names


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
def test_every_config_field_has_a_flag_and_help_works(runner, capsys):
    p = runner_parser(argparse.ArgumentParser(prog=runner.name), runner)
    dests = {a.dest: a for a in p._actions}
    for f in dataclasses.fields(runner.config):
        assert f.name in dests, f"{runner.name}: field {f.name} has no flag"
        assert dests[f.name].help, f"{runner.name}: --{f.name} has no help"
    for shared in ("out", "config", "threads"):
        assert shared in dests
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*_argv(runner), "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"adjinv {' '.join(_argv(runner))}" in text and "--config" in text


# ----------------------------------------------------------------------------- round trip
def _double(v: str) -> int:
    return 2 * int(v)


@dataclass
class Toy:
    """Every kind of field the skeleton turns into a flag."""

    name: str = field(default="a", metadata={"help": "a string"})
    n: int | None = field(default=None, metadata={"help": "an optional int"})
    x: float = field(default=0.5, metadata={"help": "a float"})
    on: bool = field(default=False, metadata={"help": "a switch"})
    keep: bool = field(default=True, metadata={"flag": "--drop", "const": False, "help": "off"})
    xs: list[float] = field(default_factory=lambda: [1.0], metadata={"help": "several"})
    tags: list[str] = field(default_factory=lambda: ["t"], metadata={
        "flag": "--tag", "append": True, "clear": ("--no-tag", "none"), "help": "repeatable"})
    kind: str = field(default="p", metadata={"choices": ["p", "q"], "help": "a choice"})
    twice: int = field(default=0, metadata={"type": str, "parse": _double, "help": "parsed"})
    opts: dict = field(default_factory=lambda: {"a": 1, "b": 2}, metadata={
        "flag": "--opt-b", "type": int, "parse": lambda v: {"b": v}, "help": "one key"})
    target: int | None = field(default=None, metadata={"flag": "--class", "help": "renamed"})


def _toy_run(cfg: Toy, out: Path, *, log=quiet_log) -> dict:
    log(f"toy: {cfg.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    return {"config": dataclasses.asdict(cfg)}


_toy_run.__module__ = "adjinv.paper.runners.toy"  # its logger: one of the runners'

TOY = Runner("toy", Toy, _toy_run, help="toy", description="toy", outputs=("results.json",),
             summary=lambda r, out: [f"name {r['config']['name']}"])


def _toy(argv: list[str]) -> Toy:
    return config_from_args(Toy, runner_parser(argparse.ArgumentParser(), TOY).parse_args(argv))


def test_defaults_flags_and_json_round_trip(tmp_path):
    assert _toy(["--out", "o"]) == Toy()
    cfg = _toy(["--out", "o", "--name", "b", "--n", "3", "--x", "2", "--on", "--drop", "--xs", "1",
                "2", "--tag", "u", "--tag", "v", "--kind", "q", "--twice", "4", "--opt-b", "7",
                "--class", "5"])
    assert cfg == Toy(name="b", n=3, x=2.0, on=True, keep=False, xs=[1.0, 2.0], tags=["u", "v"],
                      kind="q", twice=8, opts={"a": 1, "b": 7}, target=5)
    assert _toy(["--out", "o", "--no-tag"]).tags == []
    with pytest.raises(SystemExit):
        _toy(["--out", "o", "--kind", "r"])  # not a choice: a usage error
    # JSON first, flags override it; a dict flag updates only its key
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"name": "j", "n": 1, "opts": {"a": 9, "b": 0}, "tags": ["w"]}))
    cfg = _toy(["--out", "o", "--config", str(js), "--n", "2", "--opt-b", "3"])
    assert (cfg.name, cfg.n, cfg.opts, cfg.tags) == ("j", 2, {"a": 9, "b": 3}, ["w"])
    # the config written by a run reads back as the same config
    js.write_text(json.dumps(dataclasses.asdict(cfg)))
    assert _toy(["--out", "o", "--config", str(js)]) == cfg
    js.write_text(json.dumps({"nme": "typo"}))
    with pytest.raises(AdjinvError, match="unknown key"):
        _toy(["--out", "o", "--config", str(js)])


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        runner_parser(argparse.ArgumentParser(), TOY).parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a float (default 0.5)" in text and "several (default 1.0)" in text
    assert "an optional int" in text and "(default None)" not in text


def test_run_logs_on_stderr_and_summarises_on_stdout(tmp_path, capsys):
    args = runner_parser(argparse.ArgumentParser(), TOY).parse_args(
        ["--out", str(tmp_path / "o"), "--name", "z", "--threads", "1"])
    with _log_to_stderr():
        args.func(args)
    out = capsys.readouterr()
    assert "toy: z" in out.err and "toy: z" not in out.out
    assert out.out.splitlines()[0] == "name z"
    assert re.fullmatch(rf"wrote {re.escape(str(tmp_path / 'o' / 'results.json'))} in \d+\.\d s",
                        out.out.splitlines()[1])
    # library use: quiet
    _toy_run(Toy(name="q"), tmp_path / "p")
    assert capsys.readouterr() == ("", "")
    args.threads = 0
    with pytest.raises(AdjinvError, match="--threads"):
        args.func(args)


def test_a_variant_runs_instead(tmp_path, capsys):
    def only_x(cfg: Toy, out: Path, *, log=quiet_log) -> dict:
        out.mkdir(parents=True, exist_ok=True)  # the skeleton claimed (created) it
        (out / "x.txt").write_text(cfg.name)
        return {}

    toy = dataclasses.replace(TOY, variants=(Variant("--only-x", "just x", only_x, ("x.txt",)),))
    p = runner_parser(argparse.ArgumentParser(), toy)
    args = p.parse_args(["--out", str(tmp_path / "o"), "--only-x", "--name", "v"])
    args.func(args)
    assert (tmp_path / "o" / "x.txt").read_text() == "v" and not (tmp_path / "o" / "results.json").exists()
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'o' / 'x.txt'} in ")


def test_real_runner_round_trip(tmp_path):
    from adjinv.paper.runners.compression import CompressionConfig
    from adjinv.paper.runners.fidelity import FidelityConfig

    ap = build_parser()
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"random_seeds": 2, "max_iter": 30, "shifts": ["corrupt:fog:1"]}))
    a = ap.parse_args(["experiment", "compression", "--out", "o", "--config", str(js),
                       "--prune", "0", "0.9", "--no-shift", "--size", "32"])
    assert config_from_args(CompressionConfig, a) == CompressionConfig(
        random_seeds=2, max_iter=30, shifts=[], prune_ratios=[0.0, 0.9], size=32)
    js.write_text(json.dumps({"weights": {"a": "x"}, "mv": {"lr": 0.1}}))
    a = ap.parse_args(["experiment", "fidelity", "--out", "o", "--config", str(js), "--weights",
                       "b=y", "--mv-steps", "5", "--encoders", "a", "b"])
    cfg = config_from_args(FidelityConfig, a)
    assert cfg.weights == {"a": "x", "b": "y"} and cfg.mv == {"lr": 0.1, "steps": 5}
    assert cfg.encoders == ["a", "b"]
    a = ap.parse_args(["experiment", "fidelity", "--out", "o", "--weights", "nopath"])
    with pytest.raises(AdjinvError, match="NAME=PATH"):
        config_from_args(FidelityConfig, a)


# ----------------------------------------------------------------------------- quoted commands
def _quoted_commands() -> list[tuple[str, str]]:
    """``adjinv experiment …``, ``adjinv train-head …`` and ``adjinv invert-dataset …``
    command lines quoted in the README, the docs, the benchmarks' READMEs and the epilogs
    (code blocks, inline code spans, epilog lines); ``--out X`` added where a mention
    leaves it out, placeholders ``N`` read as 1; bare names and synopses with ``…`` or ``|``
    left out."""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in
             [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
              *sorted((ROOT / "benchmarks").rglob("README.md"))]}
    texts.update({f"epilog of {r.name}": f"```\n{r.epilog}\n```" for r in RUNNERS})
    pat = re.compile(r"adjinv (?:experiment [a-z-]+|train-head|invert-dataset)\b")
    found = []
    for where, text in texts.items():
        text = re.sub(r"\\\n\s*", " ", text)  # join continued lines
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
        rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
        indented = [ln for ln in rest.splitlines() if ln.startswith("    ")]
        pieces = ([ln for b in blocks for ln in b.splitlines()] + indented
                  + re.findall(r"`([^`]+)`", rest))
        for piece in pieces:
            m = pat.search(" ".join(piece.split()))
            if m is None:
                continue
            cmd = re.split(r"#| \(", m.string[m.start() + len("adjinv "):])[0]  # no comment, no aside
            if "…" in cmd or "|" in cmd or len(cmd.split()) <= 1 + cmd.startswith("experiment"):
                continue  # a synopsis with placeholders, or a command named in prose
            words = ["1" if w == "N" else w for w in shlex.split(re.sub(r"[\[\]]", "", cmd))]
            found.append((where, " ".join(words + ([] if "--out" in words else ["--out", "X"]))))
    return found


QUOTED = _quoted_commands()


def test_quoted_commands_are_found():
    assert len(QUOTED) >= 20 and any(w.startswith("docs/") for w, _ in QUOTED)


@pytest.mark.parametrize("where,cmd", QUOTED, ids=[f"{w}: {c[:50]}" for w, c in QUOTED])
def test_quoted_commands_still_parse(where, cmd):
    args = build_parser().parse_args(shlex.split(cmd))
    runner = next(r for r in RUNNERS if r.name == (args.experiment if args.command == "experiment"
                                                   else args.command))
    try:
        config_from_args(runner.config, args)
    except AdjinvError as e:
        assert "does not exist" in str(e), e  # a --config file named in the text only


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["experiment", "compression", "--out", str(tmp_path), "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "adjinv: error: --threads must be at least 1"
