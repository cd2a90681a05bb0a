"""One Gaussian blur, SciPy's rank correlation, logging instead of print, figures without
pyplot state."""

from __future__ import annotations

import math

import pytest
import torch

from adjinv import filters
from adjinv.errors import AdjinvError
from adjinv.paper.analysis.ecr import spearman


def test_spearman_ranks_ties_by_their_average():
    a = torch.tensor([1.0, 1.0, 2.0, 3.0])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # ranks of a with ties averaged: 1.5, 1.5, 3, 4 → Pearson with 1, 2, 3, 4
    ra = torch.tensor([1.5, 1.5, 3.0, 4.0]) - 2.5
    rb = torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5
    assert spearman(a, b) == pytest.approx(float(ra @ rb / (ra.norm() * rb.norm())))
    assert spearman(a, b) < 1.0  # argsort-of-argsort ranks would say exactly 1
    with_nan = torch.tensor([1.0, float("nan"), 2.0])
    assert spearman(with_nan, torch.tensor([3.0, 0.0, 1.0])) == pytest.approx(-1.0)
    assert math.isnan(spearman(torch.ones(4), b))


def test_gaussian_blur_borders():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
    ones = torch.ones_like(x)
    for border in ("replicate", "reflect", "renormalize"):
        y = filters.gaussian_blur(x, 1.5, 4, border)
        assert y.shape == x.shape and y.dtype == x.dtype
        # a normalised kernel keeps a constant image and the mean roughly
        torch.testing.assert_close(filters.gaussian_blur(ones, 1.5, 4, border), ones)
    # interior pixels do not depend on the border rule
    a, b = (filters.gaussian_blur(x, 1.0, 2, m) for m in ("replicate", "renormalize"))
    torch.testing.assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2])
    # separable = the 2-D outer-product kernel
    k = filters.gaussian_kernel1d(1.0, 2, dtype=torch.float64)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x.reshape(-1, 1, 9, 11), (2,) * 4,
                                                             mode="reflect"),
                                     (k[:, None] * k[None, :])[None, None]).reshape(x.shape)
    torch.testing.assert_close(filters.gaussian_blur(x, 1.0, 2, "reflect"), ref)
    assert filters.gaussian_blur(x, 0.0, 2) is x
    with pytest.raises(AdjinvError, match="border"):
        filters.gaussian_blur(x, 1.0, 2, "wrap")


def test_module_device_and_to_module():
    from torch import nn

    from adjinv.state import module_device, to_module

    assert module_device(nn.ReLU()) == torch.device("cpu")
    m = nn.Conv2d(3, 4, 1).double()
    x = torch.rand(1, 3, 4, 4)
    assert to_module(x, m).dtype == torch.float64
    assert to_module(torch.ones(2, dtype=torch.long), m).dtype == torch.long
    assert to_module(x, nn.ReLU()).dtype == torch.float32


def test_warnings_to_log_turns_each_warning_into_a_line():
    import warnings

    from adjinv.paper.runners.common import warnings_to_log

    lines: list[str] = []
    with warnings_to_log(lines.append):
        warnings.warn("first", stacklevel=1)
        warnings.warn("first", stacklevel=1)  # "always": repeated warnings are not swallowed
    assert lines == ["warning: first", "warning: first"]


def test_figures_use_no_pyplot_state(tmp_path):
    import sys

    from adjinv.viz.figures import save_figure, subplots

    fig, axes = subplots(1, 2, figsize=(2, 1))
    assert axes.shape == (2,)
    axes[0].plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if "matplotlib.pyplot" in sys.modules:  # another test may have imported it
        assert not sys.modules["matplotlib.pyplot"].get_fignums()


def test_library_reports_through_logging(caplog, capsys):
    import logging

    import adjinv

    enc = adjinv.load_encoder("efficientnet_lite0")
    with caplog.at_level(logging.INFO, logger="adjinv"):
        adjinv.load_lacs(enc)
    assert any(r.name == "adjinv.lacs.checkpoint" and "efficientnet_lite0" in r.getMessage()
               for r in caplog.records)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # nothing printed


def test_captured_warnings_reports_each_once_and_only_on_success():
    import warnings

    from adjinv.errors import captured_warnings

    seen = []
    with captured_warnings(seen.append) as caught:
        warnings.warn("first", stacklevel=1)
        warnings.warn("first", stacklevel=1)  # "always": a repeat is not swallowed
        warnings.warn("second", UserWarning, stacklevel=1)
    assert seen == ["first", "first", "second"] and len(caught) == 3
    seen.clear()
    with pytest.raises(RuntimeError), captured_warnings(seen.append):
        warnings.warn("lost with the error", stacklevel=1)
        raise RuntimeError
    assert seen == []


def test_ssim_window_is_the_shared_gaussian():
    from adjinv.metrics.reconstruction import ssim

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 3, 16, 16, generator=g, dtype=torch.float64)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0)
    assert float(ssim(a, b)[0]) < 0.5
    with pytest.raises(ValueError, match="odd"):
        ssim(a, b, win_size=10)
