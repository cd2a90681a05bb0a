"""The catalogue of the paper's elements (benchmarks/paper_elements.json) is consistent, and
every element gets a number and a status from the committed results by its rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("paper_elements", ROOT / "benchmarks" / "paper_elements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_catalogue_is_consistent():
    """Unique ids, a command for every element, the count recorded, every results file and
    every test it names present, an extractor for every element measured from results."""
    pe = _module()
    assert pe.problems() == []
    cat = pe.load()
    assert cat["count"] == len(cat["elements"]) >= cat["issue_count"]
    assert all(e["command"].strip() for e in cat["elements"])


def test_every_element_gets_a_known_status():
    pe = _module()
    rows = pe.rows()
    assert len(rows) == pe.load()["count"]
    for e, our, status in rows:
        assert status in pe.STATUSES, e["id"]
        assert our.strip(), e["id"]
        if e["basis"] == "tests":
            assert status == "implemented (tested)", e["id"]
        if e["basis"] == "none":
            assert status == "missing", e["id"]


def test_problems_are_found(tmp_path):
    """The consistency check can fail: a duplicate id, a wrong count, a missing file or test."""
    pe = _module()
    cat = pe.load()
    el = dict(cat["elements"][0])
    el["results"] = ["benchmarks/results/no_such_file.json"]
    el["tests"] = ["tests/test_core.py::test_no_such_test"]
    bad = {**cat, "elements": [*cat["elements"], el]}
    found = " / ".join(pe.problems(bad))
    assert "count" in found and "duplicate id" in found
    assert "no_such_file" in found and "test_no_such_test" in found


def test_future_results_fill_in_when_committed(tmp_path, monkeypatch):
    """An element waiting for another run reads 'not run' until its file exists, then gets a
    status by its rule (here: the multi-path objective, Eq. 31)."""
    pe = _module()
    el = next(e for e in pe.load()["elements"] if e["id"] == "eq31-multipath")
    assert pe.evaluate(el)[1] == "not run"
    paper = json.loads((ROOT / el["results"][0]).read_text())
    worse = json.loads(json.dumps(paper))
    worse["variant"]["mean"]["trained"]["l1"] += 0.1
    worse["variant"]["mean"]["trained"]["pearson"] -= 0.1
    (tmp_path / "benchmarks" / "results" / "leakage").mkdir(parents=True)
    (tmp_path / el["results"][0]).write_text(json.dumps(paper))
    (tmp_path / el["expected"][0]).write_text(json.dumps(worse))
    monkeypatch.setattr(pe, "REPO", tmp_path)
    our, status = pe.evaluate(el)
    assert status == "agrees" and "Eq. 31" in our


def test_the_page_has_the_generated_blocks():
    """docs/paper-claims.md carries the table and the rules; docs_tables.py --check (run by
    tests/test_docs_tables.py) keeps them equal to what the results give."""
    text = (ROOT / "docs" / "paper-claims.md").read_text()
    pe = _module()
    for block, body in (("paper-elements", pe.table()), ("paper-elements-rules", pe.rules())):
        assert f"<!-- generated:{block} -->\n{body}\n<!-- /generated:{block} -->" in text
