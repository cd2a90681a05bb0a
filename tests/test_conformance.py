"""Conformance: architectures a user may bring split and invert exactly, or are refused
clearly. The default run checks a representative subset; ``-m conformance`` (``make
conformance``) checks every torchvision classification builder and the timm families."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adjinv
from adjinv.encoders.conformance import PHI_RTOL, SUBSET, all_models, check_model, render
from adjinv.errors import AdjinvError


def assert_conforms(rec: dict) -> None:
    if rec["status"] == "unbuildable":
        pytest.skip(f"{rec['model']} does not build here: {rec['reason']}")
    assert rec["status"] != "FAILED", f"{rec['model']}: {rec['reason']}"
    if rec["status"] == "refused":
        assert rec["reason"] and "pass" in rec["reason"], rec  # names what to pass instead
        return
    assert rec["status"] in ("explicit", "mixed", "autograd")
    assert rec["logits_rel_err"] <= 1e-6 and rec["finite"]
    assert rec["phi_rel_err"] <= PHI_RTOL
    assert len(rec["engines"]) == len(rec["stages"]) == len(rec["channels"])


@pytest.mark.parametrize("name", SUBSET)
def test_conformance_subset(name):
    assert_conforms(check_model(name))


def pytest_generate_tests(metafunc):
    """The full list only when ``-m conformance`` selects it (listing timm's models is slow)."""
    if "name_all" in metafunc.fixturenames:
        expr = metafunc.config.getoption("markexpr") or ""
        wanted = "conformance" in expr and "not conformance" not in expr
        names = [n for n in all_models() if n not in SUBSET] if wanted else []
        metafunc.parametrize("name_all", names)


@pytest.mark.conformance
def test_conformance_all(name_all):
    assert_conforms(check_model(name_all))


def test_transformer_after_a_stem_is_refused():
    """A patch-embedding convolution followed by a transformer on tokens: the deepest
    (B, C, H, W) map is the stem's, and the error says so instead of inverting it alone."""

    class PatchTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 8, 8)
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
                                        for _ in range(3))
            self.fc = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.stem(x).flatten(2).transpose(1, 2)
            for b in self.blocks:
                t = b(t)
            return self.fc(t.mean(1))

    torch.manual_seed(0)
    with pytest.raises(AdjinvError, match="head computes on tokens"):
        adjinv.encoder_from_module(PatchTransformer(), probe_size=32)


def test_render_counts_and_lists_refusals():
    rows = [{"model": "a/x", "status": "explicit", "split": "children", "stages": ["s0"],
             "lac_boundaries": [], "engines": ["explicit"], "head": "LinearHead",
             "phi_rel_err": 1e-16, "phi_rel_err_unchecked": 1e-16, "reason": ""},
            {"model": "a/y", "status": "refused", "reason": "no trunk; pass stages=[…]"}]
    doc = render({"results_file": "r.json", "date": "d", "torch": "t", "torchvision": "v",
                  "size": 64, "models": rows})
    assert "| explicit | 1 |" in doc and "| refused | 1 |" in doc and "| total | 2 |" in doc
    assert "| a/x | explicit | children | 1 | [] | `E` |" in doc
    assert "**a/y** (refused): no trunk" in doc
