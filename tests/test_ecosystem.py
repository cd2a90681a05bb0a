"""adjinv beside Captum and Quantus (docs/ecosystem.md): Captum's call shape, and Quantus's
randomisation and faithfulness metrics run on adjinv's attributions and on Saliency's.

Needs captum, quantus and torchcam (the ``[test]`` extra). Skips where they are missing, except in
CI (``CI`` set), where a missing one fails.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import adjinv
from adjinv.errors import AdjinvError
from adjinv.methods.saliency import AdjointSaliency, quantus_explain


def _need(name: str):
    if os.environ.get("CI"):
        return __import__(name)
    return pytest.importorskip(name)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU()),
                         nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


def test_captum_shape_tuples_and_sensitivity():
    _need("captum")
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    model = _model()
    inv = adjinv.Inverter(model, lacs="identity", encoder_kw={"probe_size": 32})
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64).float()
    y = model(x).argmax(1)
    sal = AdjointSaliency(inv)
    a = sal.attribute(x, target=y)
    assert isinstance(a, torch.Tensor) and a.shape == x.shape and a.dtype == x.dtype
    (a_t,) = sal.attribute((x,), target=y)
    torch.testing.assert_close(a_t, a)
    signed = sal.attribute(x, target=y, abs=False)
    torch.testing.assert_close(signed.abs(), a)
    torch.testing.assert_close(sal.saliency(x, y), a.sum(1))
    assert Saliency(model).attribute(x, target=y).shape == a.shape  # the same shape as Captum's
    for fn in (sal.attribute, Saliency(model).attribute):
        s = sensitivity_max(fn, (x,), target=y, n_perturb_samples=2)
        assert s.shape == (3,) and bool(torch.isfinite(s).all())
    with pytest.raises(AdjinvError, match="one image batch"):
        sal.attribute((x, x), target=y)
    with pytest.raises(AdjinvError, match="drop"):
        sal.attribute(x, target=y, additional_forward_args=(1,))


def test_quantus_randomisation_and_faithfulness_on_adjinv_and_saliency():
    quantus = _need("quantus")
    _need("captum")  # quantus.explain's Saliency
    model = _model()
    x = torch.rand(4, 3, 32, 32)
    y = model(x).argmax(1)
    xn, yn = x.numpy(), y.numpy()
    a = quantus_explain(model, xn, yn)
    assert a.shape == (4, 1, 32, 32) and a.dtype == np.float32 and np.isfinite(a).all()
    assert quantus_explain(model, xn, yn, channels="keep").shape == xn.shape
    for explain, kw in ((quantus_explain, {}), (quantus.explain, {"method": "Saliency"})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mprt = quantus.MPRT(layer_order="bottom_up", disable_warnings=True,
                                display_progressbar=False)
            scores = mprt(model=model, x_batch=xn, y_batch=yn, a_batch=None, explain_func=explain,
                          explain_func_kwargs=kw, device="cpu")
            faith = quantus.FaithfulnessCorrelation(nr_runs=5, subset_size=16, perturb_baseline="black",
                                                    return_aggregate=False, disable_warnings=True,
                                                    display_progressbar=False)
            corr = faith(model=model, x_batch=xn, y_batch=yn, a_batch=None, explain_func=explain,
                         explain_func_kwargs=kw, device="cpu")
        assert len(scores) > 1 and all(np.isfinite(np.asarray(v, dtype=float)).all()
                                       for v in scores.values())
        assert len(corr) == 4 and np.isfinite(np.asarray(corr, dtype=float)).all()


def test_ecosystem_page_runs():
    """docs/ecosystem.md's block: adjinv, Captum, Quantus and torch-cam on one model."""
    for name in ("captum", "quantus", "torchcam"):
        _need(name)
    page = Path(__file__).resolve().parents[1] / "docs" / "ecosystem.md"
    block = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)[0]
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "docs/ecosystem.md", "exec"), ns)
    assert ns["ours"].shape == ns["theirs"].shape == ns["x"].shape
    assert bool(torch.isfinite(ns["sens"]).all())
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in ns["scores"].values())
    assert ns["cams"].shape == (2, 2, 2)
    assert float(ns["x_hat_layer4"].min()) >= 0 and float(ns["x_hat_layer4"].max()) <= 1
