"""One Gaussian blur, SciPy's rank correlation, logging instead of print, figures without
pyplot state."""

from __future__ import annotations

import math

import pytest
import torch

from adjinv import filters
from adjinv.analysis.ecr import spearman
from adjinv.errors import AdjinvError


def test_spearman_ranks_ties_by_their_average():
    a = torch.tensor([1.0, 1.0, 2.0, 3.0])
    b = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # ranks of a with ties averaged: 1.5, 1.5, 3, 4 → Pearson with 1, 2, 3, 4
    ra = torch.tensor([1.5, 1.5, 3.0, 4.0]) - 2.5
    rb = torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5
    assert spearman(a, b) == pytest.approx(float(ra @ rb / (ra.norm() * rb.norm())))
    assert spearman(a, b) < 1.0  # argsort-of-argsort ranks would say exactly 1
    assert spearman(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([3.0, 0.0, 1.0])) == pytest.approx(-1.0)
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
