"""Shared fixtures: tiny CNNs wrapped as StagedEncoders, random LACs, test images.

Everything here is small (<= 16 channels, 32-64 px) so the suite runs on 2 CPU cores.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adjinv.core.lac import LACBank
from adjinv.encoders.staged import LinearHead, StagedEncoder

NUM_CLASSES = 5

# The tensors here are tiny: with several OpenMP threads on a shared 2-core machine, thread
# hand-offs cost far more than the work (a resnet18 forward at 64 px: 0.65 s with 2 threads
# under load vs 0.02 s with 1). ADJINV_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("ADJINV_TEST_THREADS", "1")))


# ----------------------------------------------------------------------------- models
def tiny_relu_cnn(seed: int = 0, bias: bool = True) -> nn.Sequential:
    """stem conv/2 + ReLU, a non-decimating stage, two decimating stages, GAP + Linear.

    Top-level children are containers, so ``encoder_from_module`` starts a stage at each.
    """
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=bias), nn.ReLU()),  # stem, /2
        nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=bias), nn.ReLU()),  # no decimation
        nn.Sequential(nn.Conv2d(8, 12, 3, 2, 1, bias=bias), nn.ReLU()),  # /4
        nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1, bias=bias), nn.ReLU()),  # /8
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, NUM_CLASSES),
    )


def staged_from_sequential(model: nn.Sequential, n_stages: int = 4, **kw: object) -> StagedEncoder:
    """Explicit split: the first ``n_stages`` children are the stages, the last one the head."""
    return StagedEncoder(list(model[:n_stages]), LinearHead(model[-1]), probe_size=64, **kw)


def inplace_bn_cnn(seed: int = 0) -> nn.Sequential:
    """BatchNorm everywhere and ``nn.ReLU(inplace=True)`` right at stage boundaries: block 1
    ends in BN (no activation) and block 2 *starts* with an in-place ReLU on its input."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)),
        nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 12, 3, 2, 1, bias=False),
                      nn.BatchNorm2d(12), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(12, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                      nn.ReLU(inplace=True)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, NUM_CLASSES),
    )
    # non-trivial running statistics, so that train vs eval mode gives different outputs
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.3)
    return model


# ----------------------------------------------------------------------------- helpers
def random_lacs(enc: StagedEncoder, seed: int = 1) -> LACBank:
    """LACs with "trained-like" random γ/β (γ in ±[0.5, 1.5], β ~ N(0, 0.3))."""
    g = torch.Generator().manual_seed(seed)
    lacs = LACBank.for_encoder(enc)
    with torch.no_grad():
        for lac in lacs.lacs.values():
            n = lac.gamma.numel()
            sign = torch.where(torch.rand(n, generator=g) < 0.2, -1.0, 1.0)
            lac.gamma.copy_(sign * (0.5 + torch.rand(n, generator=g)))
            lac.beta.copy_(0.3 * torch.randn(n, generator=g))
    return lacs


def smooth_image(size: int = 32, batch: int = 1, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images in [0, 1] with spatial structure (blurred noise), (B, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64)
    k = torch.ones(3, 1, 3, 3, dtype=torch.float64) / 9
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=3)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return x.to(dtype)


def reference_psi(enc: StagedEncoder, lacs: LACBank, x: torch.Tensor, stage: int,
                  seeds: torch.Tensor, keep_graph: bool = False) -> torch.Tensor:
    """Ψ_stage(S) for each seed S in ``seeds`` (N, B, C, h, w) → (N, B, 3, H, W), written
    out from docs/method.md §3 with plain autograd, one seed and one stage at a time, with no vmap
    and no use of ``StageInfo``/``lac_boundaries``: after the pull-back through a stage
    whose output is smaller than its input, apply the LAC on the gradient w.r.t. that
    stage's input; after the stem, ``LAC_pix``. ``keep_graph``: keep the autograd graph
    (the result can be differentiated w.r.t. the LAC parameters, for training tests)."""
    with enc.frozen():
        ins, outs = [], []
        a = x.detach()
        for st in enc.stages[: stage + 1]:
            a_in = a.detach().requires_grad_(True)
            with torch.enable_grad():
                a = st(a_in)
            ins.append(a_in)
            outs.append(a)
        res = []
        for seed in seeds:
            u = seed
            for k in range(stage, -1, -1):
                (u,) = torch.autograd.grad(outs[k], ins[k], grad_outputs=u, retain_graph=True,
                                           create_graph=keep_graph)
                if k == 0:
                    u = lacs.lacs["pix"](u)
                elif outs[k].shape[-1] < ins[k].shape[-1] or outs[k].shape[-2] < ins[k].shape[-2]:
                    u = lacs.lacs[f"s{k - 1}"](u)
            res.append(u if keep_graph else u.detach())
    return torch.stack(res)


def module_state(model: nn.Module) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Training flags of every submodule and requires_grad of every parameter."""
    return ([(n, m.training) for n, m in model.named_modules()],
            [(n, p.requires_grad) for n, p in model.named_parameters()])


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def tiny_model() -> nn.Sequential:
    """Fixture (a), the torch module (float64)."""
    return tiny_relu_cnn(seed=0).double()


@pytest.fixture
def tiny_enc(tiny_model: nn.Sequential) -> StagedEncoder:
    """Fixture (a) as a StagedEncoder, float64 (stages: stem/2, same, /4, /8)."""
    return staged_from_sequential(tiny_model)


@pytest.fixture
def bias_free_enc() -> StagedEncoder:
    """Fixture (b): bias-free ReLU CNN, no BatchNorm, float64 (Theorem 1 / Corollary 1)."""
    return staged_from_sequential(tiny_relu_cnn(seed=3, bias=False).double())


@pytest.fixture
def inplace_model() -> nn.Sequential:
    """Fixture (c): BatchNorm + in-place ReLU at the stage boundaries (float32)."""
    return inplace_bn_cnn(seed=0)


@pytest.fixture(scope="session")
def resnet18_pair() -> tuple[nn.Module, StagedEncoder]:
    """A randomly initialised torchvision resnet18 and the registry's staging of *that*
    model (``load_encoder`` with its builder patched to return it)."""
    import torchvision

    from adjinv.encoders import registry

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setitem(registry._REGISTRY["resnet18"], "build", lambda: model)
        enc = registry.load_encoder("resnet18", random_init=True)
    return model, enc
