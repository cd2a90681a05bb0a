"""The package's layers (docs/index.md, "Layout"): every import points down or sideways,
and nothing in the library imports the paper-reproduction harness ``adjinv.paper``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "adjinv"

# Lower number = lower layer. A module may import its own layer or any lower one.
LAYER: dict[str, int] = {
    "errors": 0, "records": 0, "state": 0, "fileio": 0, "filters": 0, "_optional": 0, "distributed": 0,
    "finite": 0, "outdir": 0,
    "encoders": 1, "core": 1,
    "images": 2,
    "lacs": 3,
    "methods": 4, "metrics": 4,
    "viz": 5,
    "api": 6, "__init__": 6,
    "paper": 7,
    "cli": 8, "__main__": 8,
}


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _layer_of(parts: list[str]) -> tuple[str, int]:
    top = parts[1] if len(parts) > 1 else "__init__"
    assert top in LAYER, f"adjinv.{top} has no layer: add it to LAYER and to docs/index.md"
    return top, LAYER[top]


def _imports(path: Path, pkg: list[str] | None = None) -> list[list[str]]:
    """Absolute module paths of every adjinv import in ``path`` (top level or in functions);
    ``pkg`` is the package the file belongs to (default: from its place under src/)."""
    tree = ast.parse(path.read_text())
    if pkg is None:
        pkg = _module(path) if path.name == "__init__.py" else _module(path)[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "adjinv":
                mod = node.module.split(".")
            else:
                continue
            if len(mod) == 1:  # from adjinv import x / from .. import x: x is a module or a name
                out += [mod + [a.name] if (SRC / f"{a.name}.py").exists() or (SRC / a.name).is_dir()
                        else mod for a in node.names]
            else:
                out.append(mod)
        elif isinstance(node, ast.Import):
            out += [a.name.split(".") for a in node.names if a.name.split(".")[0] == "adjinv"]
    return out


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    me, mine = _layer_of(_module(path))
    for mod in _imports(path):
        them, theirs = _layer_of(mod)
        assert theirs <= mine, (f"{path.relative_to(SRC)} (layer {me}) imports {'.'.join(mod)} "
                                f"(layer {them}, higher)")


def test_library_never_imports_the_harness() -> None:
    offenders = [str(p.relative_to(SRC)) for p in FILES
                 if _layer_of(_module(p))[1] < LAYER["paper"]
                 and any(len(m) > 1 and m[1] == "paper" for m in _imports(p))]
    assert offenders == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The AST walk finds a function-level relative import of the harness."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f() -> None:\n    from ..paper.runners import common  # noqa\n")
    found = _imports(fake, pkg=["adjinv", "metrics"])
    assert ["adjinv", "paper", "runners"] in found
    assert _layer_of(found[0])[1] > LAYER["metrics"]
