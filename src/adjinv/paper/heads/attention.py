"""Hybrid attention head on the frozen encoder (Sec. 3.5, C.9, docs/method.md §12): the model,
its training on cached deepest maps (checkpointed, resumable), and the token-locality
measure of the per-token visualisations."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core.validate import check_input
from ...encoders.staged import StagedEncoder
from ...errors import AdjinvError
from ...fileio import atomic_write_bytes
from ...filters import gaussian_blur
from ...lacs.checkpoint import read_tagged
from ...state import eval_mode, module_device, to_module
from ..data.labelled import LabelledSet

HEAD_FORMAT = "adjinv-head/1"


@dataclass
class HybridConfig:
    """Architecture of [`HybridAttentionClassifier`][HybridAttentionClassifier].

    ``dim=None`` keeps the tokens at the encoder's width ``C_L`` (the paper: 49 tokens
    of width 1024 for ConvNeXt-Base); an integer adds a trainable linear token
    embedding ``C_L → dim`` (an option, for small machines). ``mlp_ratio``: the MLP's
    hidden width over the token width (the paper does not give it; 1 keeps the
    1280-wide Lite0 head at 30 M parameters). ``norm_first``: see the class docstring.
    """

    blocks: int = 3
    heads: int = 8
    mlp_ratio: float = 1.0
    dropout: float = 0.0
    norm_first: bool = True
    dim: int | None = None


class HybridAttentionClassifier(nn.Module):
    """Transformer head over the frozen encoder's deepest map (Sec. 3.5, C.9).

    ``A_L`` (B, C_L, h, w) is flattened to ``h·w`` tokens of width ``C_L`` (token
    ``t`` = row ``t // w``, column ``t % w``), passed through ``blocks`` standard
    Transformer encoder blocks (multi-head self-attention, LayerNorm, residual
    connections, MLP; ``nn.TransformerEncoderLayer`` with ``batch_first=True``),
    mean-pooled over tokens and classified by a linear layer. There is no positional
    embedding (the paper mentions none): a token's position reaches the head only
    through the CNN features, and the model accepts any ``h×w``.

    It takes ``A_L``, not the image, like the encoder's own [`LinearHead`][LinearHead]: the
    encoder stays outside, frozen and shared with the LAC cascade. Only this module's
    parameters train.

    [choice] ``norm_first=True`` (pre-norm, default): ``T_b`` ([`token_states()`][token_states]) is
    the residual stream after block ``b``, whose energy ``‖T_b‖²`` depends on the input;
    a final LayerNorm precedes pooling. With ``norm_first=False`` (post-norm, PyTorch's
    default) every ``T_{b,t}`` is a LayerNorm output whose norm is ≈ ``‖γ‖``-fixed, so
    the energy readouts of C.9 carry almost no gradient.
    """

    def __init__(self, channels: int, num_classes: int, config: HybridConfig | None = None,
                 classes: list[str] | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else HybridConfig()
        d = cfg.dim if cfg.dim is not None else channels
        if cfg.blocks < 1:
            raise AdjinvError(f"the hybrid head needs at least one attention block, got {cfg.blocks}")
        if cfg.heads < 1 or d % cfg.heads:
            divs = [k for k in (1, 2, 4, 5, 8, 10, 16) if d % k == 0]
            raise AdjinvError(f"{cfg.heads} attention heads do not divide the token width {d}; "
                              f"choose one of {divs}")
        if num_classes < 2:
            raise AdjinvError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.config = cfg
        self.channels = channels
        self.classes = list(classes) if classes is not None else [str(k) for k in range(num_classes)]
        self.embed = nn.Linear(channels, d) if cfg.dim is not None else nn.Identity()
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=max(1, round(cfg.mlp_ratio * d)),
                                       dropout=cfg.dropout, activation="gelu", batch_first=True,
                                       norm_first=cfg.norm_first)
            for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        self.fc = nn.Linear(d, num_classes)

    @property
    def num_classes(self) -> int:
        """Number of logits K."""
        return self.fc.out_features

    def tokens(self, a_last: torch.Tensor) -> torch.Tensor:
        """``A_L`` (B, C, h, w) → tokens (B, h·w, D), row-major."""
        if a_last.dim() != 4 or a_last.shape[1] != self.channels:
            raise AdjinvError(f"the hybrid head expects the deepest map (B, {self.channels}, h, w), "
                              f"got shape {tuple(a_last.shape)}")
        return self.embed(a_last.flatten(2).transpose(1, 2))

    def token_states(self, a_last: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """``[T_0, …, T_upto]``: each block's output (B, h·w, D)."""
        last = len(self.blocks) - 1 if upto is None else upto
        if not 0 <= last < len(self.blocks):
            raise AdjinvError(f"block {upto} out of range for a head with {len(self.blocks)} blocks")
        t = self.tokens(a_last)
        out = []
        for blk in self.blocks[: last + 1]:
            t = blk(t)
            out.append(t)
        return out

    def forward(self, a_last: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) from the deepest map."""
        t = self.token_states(a_last)[-1]
        return self.fc(self.norm(t).mean(dim=1))

    @torch.no_grad()
    def classify(self, encoder: StagedEncoder, x: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised image batch (the encoder frozen, this head in eval mode)."""
        x = check_input(x, encoder)
        with encoder.frozen(), eval_mode(self):
            return self(encoder.forward_stages(x)[-1])



# ----------------------------------------------------------------------------- training
@dataclass
class HeadTrainConfig:
    """Hyper-parameters of [`train_head()`][train_head] (stored in checkpoints)."""

    steps: int = 60
    lr: float = 3e-4
    batch_size: int = 16
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 20
    model: HybridConfig = field(default_factory=HybridConfig)


@dataclass
class HeadTraining:
    """Result of [`train_head()`][train_head]."""

    model: HybridAttentionClassifier
    losses: list[float]
    train_accuracy: float | None
    test_accuracy: float | None
    step: int


@torch.no_grad()
def deepest_features(encoder: StagedEncoder, images: torch.Tensor, batch_size: int = 16,
                     progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``A_L`` (N, C_L, h, w) of images (N, 3, H, W) in [0, 1], batched, encoder frozen."""
    out = []
    with encoder.frozen():
        for s in range(0, images.shape[0], batch_size):
            x = check_input(encoder.normalize(images[s:s + batch_size]), encoder)
            out.append(encoder.forward_stages(x)[-1])
            if progress is not None:
                progress(min(s + batch_size, images.shape[0]), images.shape[0])
    if not out:
        return to_module(torch.zeros(0, encoder.infos[-1].channels, 1, 1), encoder)
    return torch.cat(out)


@torch.no_grad()
def accuracy(model: HybridAttentionClassifier, feats: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 64) -> float | None:
    """Top-1 accuracy on cached deepest maps (``None`` for an empty set)."""
    if feats.shape[0] == 0:
        return None
    with eval_mode(model):
        pred = torch.cat([model(feats[s:s + batch_size]).argmax(1)
                          for s in range(0, feats.shape[0], batch_size)])
    return float((pred.cpu() == labels.cpu()).float().mean())


def data_hash(data: LabelledSet) -> str:
    """SHA-256 (16 hex digits) of the training images, labels and class names."""
    h = hashlib.sha256()
    h.update("\n".join(data.classes).encode())
    for t in (data.train_images, data.train_labels):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _batch(step: int, n: int, cfg: HeadTrainConfig) -> torch.Tensor:
    """Indices of step ``step``: consecutive slices of one seeded permutation per epoch,
    so the batch depends only on ``(seed, step)`` (exact resume)."""
    idx, perms = [], {}
    for j in range(cfg.batch_size):
        pos = step * cfg.batch_size + j
        ep = pos // n
        if ep not in perms:
            perms[ep] = torch.randperm(n, generator=torch.Generator().manual_seed(
                cfg.seed * 7919 + ep))
        idx.append(int(perms[ep][pos % n]))
    return torch.tensor(idx)


@contextmanager
def _step_rng(cfg: HeadTrainConfig, step: int, device: torch.device) -> Iterator[None]:
    """Dropout of step ``step`` from its own seed (exact resume); the caller's RNG
    state is restored afterwards. Without dropout nothing random happens."""
    if cfg.model.dropout == 0:
        yield
        return
    cuda = device.type == "cuda"
    idx = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with torch.random.fork_rng(devices=[idx] if cuda else []):
        seed = cfg.seed * 1_000_003 + step
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(seed)
        yield


def _config_from_dict(d: dict) -> HeadTrainConfig:
    d = dict(d)
    d["model"] = HybridConfig(**d.get("model", {}))
    return HeadTrainConfig(**d)


def save_head(path: str | os.PathLike, model: HybridAttentionClassifier, encoder: StagedEncoder, *,
              meta: dict | None = None, extras: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the head's parameters (+ ``extras``, e.g. Adam moments) and JSON metadata
    (encoder layout and weights hash, classes, architecture) atomically as safetensors."""
    import json

    from safetensors.torch import save

    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extras or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    info = {"format": HEAD_FORMAT, "encoder": encoder.layout(),
            "encoder_hash": encoder.weights_hash(), "channels": model.channels,
            "classes": model.classes, "architecture": asdict(model.config), **(meta or {})}
    return atomic_write_bytes(path, save(tensors, metadata={"adjinv": json.dumps(info)}))


def load_head(path: str | os.PathLike, encoder: StagedEncoder, *, allow_other_weights: bool = False
              ) -> tuple[HybridAttentionClassifier, dict, dict[str, torch.Tensor]]:
    """``(model, metadata, extras)`` from a [`save_head()`][save_head] file; refuses a head
    trained on another encoder (or other weights, unless ``allow_other_weights``)."""
    meta, tensors = read_tagged(path, HEAD_FORMAT, "attention-head checkpoint", "adjinv train-head")
    mine = encoder.layout()
    if meta["encoder"]["name"] != mine["name"] or meta["encoder"]["stages"] != mine["stages"]:
        raise AdjinvError(f"attention head {str(path)!r} was trained on {meta['encoder']['name']} "
                          f"features, not on {mine['name']} ones; train one with "
                          f"`adjinv train-head --encoder {mine['name']}`")
    if meta["encoder_hash"] != encoder.weights_hash() and not allow_other_weights:
        raise AdjinvError(f"attention head {str(path)!r} was trained on other weights of "
                          f"{mine['name']} (hash {meta['encoder_hash']} vs {encoder.weights_hash()}); "
                          "retrain it for these weights")
    model = HybridAttentionClassifier(int(meta["channels"]), len(meta["classes"]),
                                      HybridConfig(**meta["architecture"]), meta["classes"])
    state = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    if state:
        model.to(next(iter(state.values())).dtype)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AdjinvError(f"attention head {str(path)!r} has inconsistent tensors: "
                          f"{str(e).splitlines()[0]}") from None
    model.to(module_device(encoder))
    model.eval()
    extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    return model, meta, extras


def _adam_state(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> dict[str, torch.Tensor]:
    out = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"adam.{i}.{k}"] = torch.as_tensor(v)
    return out


def _restore_adam(opt: torch.optim.Optimizer, params: list[nn.Parameter],
                  extras: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(params):
        st = {k.split(".", 2)[2]: v for k, v in extras.items() if k.startswith(f"adam.{i}.")}
        if st:
            opt.state[p] = {k: (v.to(p.device) if v.dim() else v).clone() for k, v in st.items()}


def train_head(encoder: StagedEncoder, data: LabelledSet, config: HeadTrainConfig, *,
               checkpoint: str | os.PathLike | None = None, resume: bool = False,
               progress: Callable[[int, int, float], None] | None = None,
               feature_progress: Callable[[int, int], None] | None = None) -> HeadTraining:
    """Train a [`HybridAttentionClassifier`][HybridAttentionClassifier] on ``data`` with the encoder frozen.

    The deepest maps are computed once (batched, no grad) and cached; only the
    attention blocks, final norm and linear head train (Adam, cross-entropy). The
    batch of step ``t`` depends only on ``(seed, t)``. With ``checkpoint`` the state
    (head, Adam moments, step, losses) is saved atomically every
    ``config.checkpoint_every`` steps and at the end, with the accuracies; with
    ``resume`` a run continues from that file exactly where it stopped.
    """
    if config.steps < 0 or config.batch_size < 1 or config.lr <= 0 or config.checkpoint_every < 1:
        raise AdjinvError("steps must be >= 0, batch_size >= 1, lr > 0 and checkpoint_every >= 1")
    if data.train_images.shape[0] == 0:
        raise AdjinvError("the labelled set has no training images")
    if data.size < encoder.total_stride:
        raise AdjinvError(f"images of {data.size} px are smaller than the encoder's total stride "
                          f"{encoder.total_stride}; use a larger --size")
    dhash = data_hash(data)
    feats = deepest_features(encoder, torch.cat([data.train_images, data.test_images]),
                             progress=feature_progress)
    n_tr = data.train_images.shape[0]
    f_tr, f_te = feats[:n_tr], feats[n_tr:]
    y_tr = data.train_labels.to(feats.device)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(config.seed)
        model = HybridAttentionClassifier(feats.shape[1], len(data.classes), config.model, data.classes)
    model.to(device=feats.device, dtype=feats.dtype)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    start, losses = 0, []
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        loaded, meta, extras = load_head(checkpoint, encoder)
        saved = _config_from_dict(meta.get("training", {}))
        mismatch = [k for k in ("lr", "batch_size", "weight_decay", "seed", "model")
                    if getattr(saved, k) != getattr(config, k)]
        if meta.get("data", {}).get("hash") != dhash:
            mismatch.append("labelled data")
        if mismatch:
            raise AdjinvError(f"cannot resume from {str(checkpoint)!r}: it differs in "
                              f"{', '.join(mismatch)}; use the same options or a new --out")
        model.load_state_dict(loaded.state_dict())
        _restore_adam(opt, params, extras)
        start, losses = int(meta.get("step", 0)), list(meta.get("losses", []))
        if start > config.steps:
            raise AdjinvError(f"{str(checkpoint)!r} already holds {start} steps, more than "
                              f"--steps {config.steps}")
    data_meta = {"hash": dhash, "description": data.description, "size": data.size,
                 "train": n_tr, "test": int(data.test_images.shape[0])}

    def save(step: int, acc: dict | None = None) -> None:
        if checkpoint is None:
            return
        save_head(checkpoint, model, encoder, extras=_adam_state(opt, params),
                  meta={"training": asdict(config), "data": data_meta, "step": step,
                        "losses": losses, "complete": acc is not None, "accuracy": acc})

    model.train()
    for step in range(start, config.steps):
        idx = _batch(step, n_tr, config).to(feats.device)
        with _step_rng(config, step, feats.device):
            loss = F.cross_entropy(model(f_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            save(step + 1)
    model.eval()
    acc_tr = accuracy(model, f_tr, data.train_labels)
    acc_te = accuracy(model, f_te, data.test_labels)
    save(config.steps, {"train": acc_tr, "test": acc_te})
    return HeadTraining(model, losses, acc_tr, acc_te, config.steps)


# ----------------------------------------------------------------------------- token locality
@dataclass
class TokenPeaks:
    """Where each per-token visualisation puts its energy, against the token's position.

    ``grid`` (T, 2): token ``t``'s (row, column) in the ``h×w`` grid;
    ``peak_px`` (B, T, 2): (y, x) of the energy peak of its pixel map;
    ``peak_grid`` (B, T, 2): that peak in token-grid coordinates (cell centres at integers);
    ``distance`` / ``distance_px`` (B, T): peak to own position, in token-grid units / px;
    ``shuffled`` (B, T): peak to a random *other* token's position (the reference);
    ``others_mean`` (B, T): mean distance from the peak to every other token's position;
    ``own_cell`` (B, T): the peak lies inside the token's own cell;
    ``own_energy`` (B, T): fraction of the map's energy inside the token's own cell
    (``1/T`` if the energy were spread evenly); ``shuffled_energy`` (B, T): the same
    fraction inside the random other token's cell; ``window``: the smoothing in px.
    """

    grid: torch.Tensor
    peak_px: torch.Tensor
    peak_grid: torch.Tensor
    distance: torch.Tensor
    distance_px: torch.Tensor
    shuffled: torch.Tensor
    others_mean: torch.Tensor
    own_cell: torch.Tensor
    own_energy: torch.Tensor
    shuffled_energy: torch.Tensor
    window: int


def token_energy_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per-pixel energy ``Σ_rgb (Ψ − mean_hw Ψ)²`` of pixel maps (..., 3, H, W) → (..., H, W).

    The per-RGB spatial mean is removed first: it is ``LAC_pix``'s bias β plus the
    normalised part's mean, which is zero (Prop. B.3), so the centring removes
    exactly the constant offset that carries no spatial information."""
    c = maps - maps.mean(dim=(-2, -1), keepdim=True)
    return c.pow(2).sum(dim=-3)


def smooth_energy(e: torch.Tensor, window: int) -> torch.Tensor:
    """``e`` (..., H, W) smoothed by a Gaussian of σ = ``window``/4 px (so the
    full width at half maximum is ≈ 0.6 ``window``), normalised by the kernel mass
    inside the image so that borders are not favoured. A Gaussian, unlike a box,
    keeps a compact source's peak unique. ``window <= 1``: no smoothing."""
    if window <= 1:
        return e
    sigma = window / 4
    return gaussian_blur(e, sigma, max(1, math.ceil(3 * sigma)), "renormalize")


def token_peak_distance(maps: torch.Tensor, grid: tuple[int, int], *, window: int | None = None,
                        seed: int = 0) -> TokenPeaks:
    """Locality of per-token maps: ``maps`` (B, T, 3, H, W) with ``T = h·w``, map ``t``
    being the visualisation of token ``t`` (row-major) of the ``h×w`` token ``grid``.

    The peak is the argmax of [`token_energy_maps()`][token_energy_maps] after
    [`smooth_energy()`][smooth_energy]
    at the scale ``window`` px. [choice] ``window=None`` (default) is one token cell
    (``H/h`` px): a single-pixel argmax of these speckled maps is dominated by pixel
    noise; ``window=1`` gives the raw per-pixel argmax. Pixel ``(y, x)`` maps to grid
    coordinates ``((y + ½)·h/H − ½, (x + ½)·w/W − ½)``. The shuffled reference draws,
    for each map, one other token uniformly (seeded): the distance expected if maps
    were assigned to tokens at random.
    """
    h, w = grid
    b, t, _, hh, ww = maps.shape
    if t != h * w:
        raise AdjinvError(f"{t} token maps do not fill a {h}x{w} grid")
    if t < 2:
        raise AdjinvError("token locality needs at least two tokens")
    win = max(1, hh // h) if window is None else int(window)
    dev = maps.device
    e = token_energy_maps(maps.detach().double())
    arg = smooth_energy(e, win).flatten(-2).argmax(-1)
    py, px = (arg // ww).double(), (arg % ww).double()
    gy = (py + 0.5) * h / hh - 0.5
    gx = (px + 0.5) * w / ww - 0.5
    tok = torch.arange(t, device=dev)
    pos = torch.stack([tok // w, tok % w], -1).double()  # (T, 2)
    dy, dx = gy - pos[:, 0], gx - pos[:, 1]
    dist = torch.sqrt(dy ** 2 + dx ** 2)
    dist_px = torch.sqrt((dy * hh / h) ** 2 + (dx * ww / w) ** 2)
    gen = torch.Generator().manual_seed(seed)
    other = ((tok.cpu() + torch.randint(1, t, (b, t), generator=gen)) % t).to(dev)
    shuffled = torch.sqrt((gy - pos[other, 0]) ** 2 + (gx - pos[other, 1]) ** 2)
    all_d = torch.sqrt((gy[..., None] - pos[:, 0]) ** 2 + (gx[..., None] - pos[:, 1]) ** 2)  # (B,T,T)
    others_mean = (all_d.sum(-1) - dist) / (t - 1)
    own = (dy.abs() <= 0.5) & (dx.abs() <= 0.5)
    # energy per token cell: pixel row y belongs to grid row floor(y·h/H)
    rows = (torch.arange(hh, device=dev) * h) // hh
    cols = (torch.arange(ww, device=dev) * w) // ww
    cell = (rows[:, None] * w + cols[None, :]).flatten()  # (H·W,)
    per_cell = torch.zeros(b, t, t, dtype=e.dtype, device=dev)
    per_cell.index_add_(2, cell, e.flatten(-2))
    frac = per_cell / per_cell.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    own_energy = frac.diagonal(dim1=1, dim2=2)
    shuffled_energy = frac.gather(2, other[..., None])[..., 0]
    return TokenPeaks(pos.long(), torch.stack([py, px], -1).long(), torch.stack([gy, gx], -1),
                      dist, dist_px, shuffled, others_mean, own, own_energy, shuffled_energy, win)


def summarize(values: torch.Tensor) -> dict[str, float | int | None]:
    """Mean and median (interpolated) of a tensor of distances, JSON-ready."""
    v = values.detach().double().flatten().cpu()
    if v.numel() == 0:
        return {"mean": None, "median": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(v.quantile(0.5)), "n": int(v.numel())}
