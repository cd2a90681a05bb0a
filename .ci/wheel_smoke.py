"""Run from outside the source tree with only the built wheel on the path: the installed
package imports, ships its data files, and inverts a random-init tiny CNN."""

import sys

import torch
from torch import nn

import adjinv
from adjinv.lacs.checkpoint import bundled_checkpoint

root = sys.argv[1]
assert adjinv.__file__.startswith(root), f"imported {adjinv.__file__}, not the wheel in {root}"
assert bundled_checkpoint("efficientnet_lite0") is not None, "bundled LACs missing from the wheel"
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
inv = adjinv.Inverter(model, lacs="identity", normalize=True, encoder_kw={"probe_size": 32})
res = inv(torch.rand(2, 3, 32, 32))
assert res.x_hat[-1].shape == (2, 3, 32, 32) and torch.isfinite(res.x_hat[-1]).all()
print(f"wheel OK: adjinv {adjinv.__version__} from {adjinv.__file__}")
