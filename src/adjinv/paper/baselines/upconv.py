"""UpConvNet (Dosovitskiy & Brox 2016): a feed-forward up-convolutional decoder from the
deepest features ``A_L`` back to the image (Sec. 3.1, C.1; docs/method.md §13).

Architecture, after D&B's decoders for conv features: two 3×3 convolutions at width
``width``, then one ``ConvTranspose2d(4, stride 2)`` per factor 2 of the encoder's total
stride (halving the width, down to ``min_width``), each followed by LeakyReLU(0.2), and a
final 3×3 convolution to RGB in the encoder's normalised space. Loss: mean squared error
to the image in normalised space (D&B's Euclidean pixel loss); Adam (D&B: lr 1e-4,
β = (0.9, 0.999); [choice] default lr 1e-3, for short runs).

Training is checkpointed atomically to one safetensors file (decoder, Adam moments,
JSON metadata: config, step, losses, encoder layout and weight hash) and resumes exactly:
the minibatch of step ``t`` depends only on ``(seed, t)`` and the features are computed
once, with the encoder frozen, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes
from ...lacs.checkpoint import read_tagged
from ...state import module_device, to_module

FORMAT = "adjinv-upconv/1"


class UpConvDecoder(nn.Module):
    """``A_L`` (B, C_L, h, w) → image (B, 3, h·stride, w·stride) in normalised space."""

    def __init__(self, in_channels: int, total_stride: int, width: int = 256, min_width: int = 32) -> None:
        super().__init__()
        ups = int(round(math.log2(total_stride)))
        if 2**ups != total_stride:
            raise AdjinvError(f"UpConvNet needs a power-of-two total stride, got {total_stride}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1), nn.LeakyReLU(0.2),
                                   nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(ups):
            nxt = max(min_width, w // 2)
            layers += [nn.ConvTranspose2d(w, nxt, 4, 2, 1), nn.LeakyReLU(0.2)]
            w = nxt
        layers.append(nn.Conv2d(w, 3, 3, 1, 1))
        self.net = nn.Sequential(*layers)
        self.in_channels, self.total_stride = in_channels, total_stride
        self.width, self.min_width = width, min_width

    def forward(self, a: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Decode; ``size`` resizes the output (bilinear) when the image side is not a
        multiple of the stride."""
        y = self.net(a)
        if size is not None and tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


@dataclass
class UpConvConfig:
    """Training settings (stored in the checkpoint; a resume must match them)."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    width: int = 256
    min_width: int = 32
    seed: int = 0
    checkpoint_every: int = 50
    images: list[str] = field(default_factory=list)


@torch.no_grad()
def deepest_features(encoder: StagedEncoder, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``A_L`` of images in [0, 1] (N, 3, S, S), computed with the encoder frozen."""
    out = []
    with encoder.frozen():
        for s in range(0, images.shape[0], batch_size):
            x = encoder.normalize(to_module(images[s: s + batch_size], encoder))
            out.append(encoder.forward_stages(x)[-1])
    return torch.cat(out)


def _save(path: Path, dec: UpConvDecoder, opt: torch.optim.Adam, encoder: StagedEncoder,
          cfg: UpConvConfig, step: int, losses: list[float], size: int) -> None:
    from safetensors.torch import save

    tensors = {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in dec.state_dict().items()}
    for i, p in enumerate(dec.parameters()):
        for k, v in opt.state.get(p, {}).items():
            tensors[f"adam.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    meta = {"format": FORMAT, "encoder": encoder.layout(), "encoder_hash": encoder.weights_hash(),
            "config": asdict(cfg), "step": step, "losses": losses, "size": size,
            "in_channels": dec.in_channels, "total_stride": dec.total_stride,
            "complete": step >= cfg.steps}
    atomic_write_bytes(path, save(tensors, metadata={"adjinv": json.dumps(meta)}))


def _check_encoder(meta: dict, encoder: StagedEncoder, path: Path) -> None:
    if meta["encoder"] != encoder.layout() or meta["encoder_hash"] != encoder.weights_hash():
        raise AdjinvError(f"UpConvNet checkpoint {str(path)!r} was trained for another encoder "
                          f"({meta['encoder']['name']}, hash {meta['encoder_hash']}); train one for "
                          "this encoder (a new output folder)")


def train_upconv(encoder: StagedEncoder, images: torch.Tensor, cfg: UpConvConfig | None = None, *,
                 checkpoint: str | os.PathLike | None = None, resume: bool = True,
                 progress: Callable[[int, int, float], None] | None = None
                 ) -> tuple[UpConvDecoder, list[float]]:
    """Train a decoder on ``images`` (N, 3, S, S) in [0, 1]; return it and the loss history.

    With ``checkpoint``, state is saved every ``cfg.checkpoint_every`` steps and at the
    end; with ``resume`` an existing file is continued (a complete one is just loaded)."""
    cfg = cfg or UpConvConfig()
    if images.dim() != 4 or images.shape[0] == 0:
        raise AdjinvError("UpConvNet needs a non-empty (N, 3, S, S) batch of training images")
    if cfg.steps < 0 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise AdjinvError("UpConvNet needs steps >= 0, batch_size >= 1 and lr > 0")
    feats = deepest_features(encoder, images)
    targets = encoder.normalize(to_module(images, encoder))
    torch.manual_seed(cfg.seed)
    dec = UpConvDecoder(feats.shape[1], encoder.total_stride, cfg.width, cfg.min_width)
    dec = dec.to(device=module_device(encoder), dtype=targets.dtype)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    start, losses = 0, []
    path = Path(checkpoint) if checkpoint is not None else None
    if resume and path is not None and path.is_file():
        meta, tensors = read_tagged(path, FORMAT, "UpConvNet checkpoint", "adjinv experiment fidelity")
        _check_encoder(meta, encoder, path)
        saved = meta["config"]
        differ = [k for k in ("batch_size", "lr", "width", "min_width", "seed")
                  if saved.get(k) != asdict(cfg)[k]]
        if differ or meta["size"] != images.shape[-1]:
            raise AdjinvError(f"cannot resume {str(path)!r}: its settings differ in "
                              f"{', '.join(differ) or 'image size'}; use a new output folder")
        dec.load_state_dict({k.removeprefix("decoder."): v for k, v in tensors.items()
                             if k.startswith("decoder.")})
        params = list(dec.parameters())
        for i, q in enumerate(params):
            st = {k.split(".", 2)[2]: v.to(q.device) for k, v in tensors.items()
                  if k.startswith(f"adam.{i}.")}
            if st:
                st["step"] = st["step"].cpu()
                opt.state[q] = st
        start, losses = int(meta["step"]), list(meta["losses"])
    size = tuple(targets.shape[-2:])
    dec.train()
    for step in range(start, cfg.steps):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, feats.shape[0], (cfg.batch_size,), generator=g).to(feats.device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(dec(feats[idx], size), targets[idx])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, cfg.steps, losses[-1])
        if path is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _save(path, dec, opt, encoder, cfg, step + 1, losses, images.shape[-1])
    if path is not None and (start < cfg.steps or not path.is_file()):
        _save(path, dec, opt, encoder, cfg, cfg.steps, losses, images.shape[-1])
    dec.eval()
    return dec, losses


@torch.no_grad()
def upconv_reconstruct(encoder: StagedEncoder, decoder: UpConvDecoder, x: torch.Tensor) -> torch.Tensor:
    """Decoder output (normalised space) for the normalised batch ``x``."""
    with encoder.frozen():
        a = encoder.forward_stages(x)[-1]
    decoder.eval()
    return decoder(a, tuple(x.shape[-2:]))
