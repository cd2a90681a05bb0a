"""LAC checkpoints: safetensors for the tensors, JSON metadata inside the same file.

Nothing is unpickled: a checkpoint is tensors plus a JSON string, so a file
from an untrusted source cannot run code. The metadata records the encoder's
name, stage layout, channel counts and a hash of its weights; loading refuses
a checkpoint made for another encoder.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.lac import EPS_MODES, LACBank
from ..encoders.staged import StagedEncoder
from ..errors import AdjinvError
from ..fileio import atomic_write_bytes
from ..finite import check_finite, finite_number
from ..state import module_device

logger = logging.getLogger(__name__)

FORMAT = "adjinv-lac/1"


@dataclass
class LACCheckpoint:
    """What a checkpoint holds besides the LACs themselves."""

    meta: dict
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, lacs: LACBank, encoder: StagedEncoder, *,
                    meta: dict | None = None,
                    extras: dict[str, torch.Tensor] | None = None) -> Path:
    """Write LAC γ/β (+ ``extras``, e.g. optimiser state or the vanilla map) atomically."""
    from safetensors.torch import save

    tensors = {f"lac.{k}": v.detach().cpu().contiguous() for k, v in lacs.state_dict().items()}
    for k, v in (extras or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    info = {
        "format": FORMAT,
        "encoder": encoder.layout(),
        "encoder_hash": encoder.weights_hash(),
        "lac_boundaries": {str(k): c for k, c in lacs.boundaries.items()},
        "lac_eps": lacs.pix.eps,
        "lac_eps_mode": lacs.pix.eps_mode,
        "lac_linearize_at": lacs.linearize_at,
        **(meta or {}),
    }
    return atomic_write_bytes(path, save(tensors, metadata={"adjinv": json.dumps(info)}))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and raw tensors of a checkpoint, with clear errors for bad files."""
    return read_tagged(path, FORMAT, "LAC checkpoint", "adjinv train")


def read_tagged(path: str | os.PathLike, fmt: str, what: str,
                command: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metadata and tensors of a safetensors file whose ``adjinv`` JSON metadata has
    ``format == fmt``; ``what`` names the kind of file and ``command`` the one that
    re-creates it, in the error messages."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise AdjinvError(f"{what} {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise AdjinvError(f"{what} {str(p)!r} is truncated or corrupt "
                          f"({type(e).__name__}); re-create it with `{command}`") from None
    try:
        meta = json.loads(raw["adjinv"])
        ok = meta.get("format") == fmt
    except (KeyError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise AdjinvError(f"{str(p)!r} is not an adjinv {what} (no {fmt} metadata)")
    return meta, tensors


def _check_meta(meta: dict, tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                encoder: StagedEncoder) -> dict[int, int]:
    """Refuse malformed metadata and non-finite or non-float tensors before building
    anything; the LAC boundaries as ``{stage: channels}``."""
    where = f"LAC checkpoint {str(path)!r}"
    fix = "re-create it with `adjinv train` (or pass a bundled LAC name)"

    def bad(what: str) -> AdjinvError:
        return AdjinvError(f"{where} has malformed metadata ({what}); {fix}")

    enc = meta.get("encoder")
    if not (isinstance(enc, dict) and isinstance(enc.get("name"), str)
            and isinstance(enc.get("stages"), list)
            and all(isinstance(st, dict) and "channels" in st for st in enc["stages"])):
        raise bad("'encoder' must be an object with a name and a list of stages")
    if not isinstance(meta.get("encoder_hash"), str):
        raise bad("'encoder_hash' must be a string")
    raw = meta.get("lac_boundaries")
    if not isinstance(raw, dict):
        raise bad("'lac_boundaries' must be an object {stage: channels}")
    bounds: dict[int, int] = {}
    for k, c in raw.items():
        if not (isinstance(k, str) and k.lstrip("-").isdigit()) or isinstance(c, bool) \
                or not isinstance(c, int):
            raise bad(f"lac_boundaries entry {k!r}: {c!r} is not stage: channels")
        stage = int(k)
        same = enc["stages"] == encoder.layout()["stages"]  # else the caller names the mismatch
        if same and (not 0 <= stage < encoder.num_stages or c != encoder.infos[stage].channels):
            raise bad(f"lac_boundaries entry {k!r}: {c!r} does not fit {encoder.name} "
                      f"({encoder.num_stages} stages)")
        bounds[stage] = c
    eps = meta.get("lac_eps")
    if not finite_number(eps) or float(eps) <= 0:  # type: ignore[arg-type]
        raise bad(f"'lac_eps' is {eps!r}; it must be a finite number > 0")
    if meta.get("lac_eps_mode") not in EPS_MODES:
        raise bad(f"'lac_eps_mode' is {meta.get('lac_eps_mode')!r}, not one of {', '.join(EPS_MODES)}")
    if meta.get("lac_linearize_at", "input") not in LACBank.LINEARIZE_AT:
        raise bad(f"'lac_linearize_at' is {meta.get('lac_linearize_at')!r}, not one of "
                  f"{', '.join(LACBank.LINEARIZE_AT)}")
    used = {k: v for k, v in tensors.items()
            if k.startswith("lac.") or k.startswith("extra.vanilla.")}
    for k, v in used.items():
        if not v.is_floating_point():
            raise AdjinvError(f"{where}: tensor {k!r} has dtype {v.dtype}, not floating "
                              f"point; {fix}")
    for k in ("extra.vanilla.gain", "extra.vanilla.offset"):
        if k in used and used[k].shape != (3,):
            raise AdjinvError(f"{where}: {k!r} has shape {tuple(used[k].shape)}, not (3,) (one "
                              f"value per RGB channel); {fix}")
    check_finite(used.items(), where, fix)
    return bounds


def _describe(layout: dict) -> str:
    chans = "/".join(str(s["channels"]) for s in layout["stages"])
    return f"{layout['name']} (stage channels {chans})"


def load_checkpoint(path: str | os.PathLike, encoder: StagedEncoder, *,
                    allow_other_weights: bool = False) -> tuple[LACBank, LACCheckpoint]:
    """LACs for ``encoder`` from ``path``; refuses a checkpoint of another encoder.

    A checkpoint of the same architecture but other weights (hash differs) is
    refused too, unless ``allow_other_weights``: LACs are fitted to one set of
    weights' gradient statistics.
    """
    meta, tensors = read_checkpoint(path)
    mine = encoder.layout()
    bounds = _check_meta(meta, tensors, path, encoder)
    if meta["encoder"]["stages"] != mine["stages"] or meta["encoder"]["name"] != mine["name"]:
        raise AdjinvError(f"LAC checkpoint {str(path)!r} was trained for "
                          f"{_describe(meta['encoder'])}, not for {_describe(mine)}; pass the "
                          "checkpoint trained for this encoder, or train one with `adjinv train`")
    if meta["encoder_hash"] != encoder.weights_hash() and not allow_other_weights:
        raise AdjinvError(f"LAC checkpoint {str(path)!r} was trained on other weights of "
                          f"{mine['name']} (hash {meta['encoder_hash']} vs "
                          f"{encoder.weights_hash()}); train LACs for these weights, or pass "
                          "allow_other_weights=True (--allow-other-weights) to use it anyway")
    lacs = LACBank(bounds, eps=float(meta["lac_eps"]), eps_mode=meta["lac_eps_mode"],
                   linearize_at=meta.get("lac_linearize_at", "input"))
    state = {k.removeprefix("lac."): v for k, v in tensors.items() if k.startswith("lac.")}
    try:
        lacs.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AdjinvError(f"LAC checkpoint {str(path)!r} has inconsistent tensors: "
                          f"{str(e).splitlines()[0]}") from None
    lacs.to(module_device(encoder))
    extras = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    logger.info("loaded %d LACs for %s from %s", len(lacs.lacs), mine["name"], path)
    return lacs, LACCheckpoint(meta=meta, extras=extras)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *,
                      variant: str | None = None) -> Path:
    """Copy a training checkpoint without its optimiser state: only LAC γ/β, the
    fitted vanilla map and the metadata (what the package bundles). ``variant`` names the
    training run in the metadata (its log is ``benchmarks/results/training/<variant>.log.json``)."""
    from safetensors.torch import save

    meta, tensors = read_checkpoint(src)
    keep = {k: v for k, v in tensors.items()
            if k.startswith("lac.") or k.startswith("extra.vanilla.")}
    step = meta.get("weights_step")  # the step whose γ/β are shipped
    if step is None:  # a finished run that kept its last state beside its best γ/β
        last = any(k.startswith("extra.last.") for k in tensors)
        step = meta.get("early_stopping", {}).get("best_step") if last else meta.get("step")
    meta = {k: v for k, v in meta.items() if k not in ("history", "losses")}  # the log has them
    meta = {**meta, "exported_from_step": step, "step": step}
    if variant is not None:
        meta["variant"] = variant
    return atomic_write_bytes(dst, save(keep, metadata={"adjinv": json.dumps(meta)}))


def bundled_checkpoint(name: str, variant: str | None = None) -> Path | None:
    """The LAC checkpoint shipped inside the package for encoder ``name``, if any: the
    default one, or the named ``variant`` (docs/evidence.md lists what each is)."""
    stem = name if variant is None else f"{name}-{variant}"
    p = Path(__file__).parent / "weights" / f"{stem}.lac.safetensors"
    if p.is_file():
        return p
    if variant is not None and variant == default_variant(name):  # the default, by its name
        return bundled_checkpoint(name)
    return None


def default_variant(name: str) -> str | None:
    """The variant name recorded in the bundled default checkpoint of encoder ``name``
    (``paper-224`` for EfficientNet-Lite0), if it records one."""
    p = bundled_checkpoint(name)
    if p is None:
        return None
    v = read_checkpoint(p)[0].get("variant")
    return str(v) if v else None


def bundled_variants(name: str) -> list[str]:
    """The names of the LAC checkpoints bundled for encoder ``name``: the extra ones and
    the default's own variant name (each accepted by ``--lac`` / ``lacs=``)."""
    root = Path(__file__).parent / "weights"
    extra = {p.name[len(name) + 1: -len(".lac.safetensors")]
             for p in root.glob(f"{name}-*.lac.safetensors")}
    own = default_variant(name)
    return sorted(extra | ({own} if own else set()))


def resolve_checkpoint(name: str, lac: str | os.PathLike | None) -> Path | None:
    """A LAC checkpoint argument made a path: ``None`` → the bundled default for encoder
    ``name`` (``None`` if there is none); the name of a bundled variant (``paper``, …) →
    that file, even when a local file has the same name (``./paper`` names the file); an
    existing file → itself; anything else is refused, naming the choices."""
    if lac is None:
        return bundled_checkpoint(name)
    if not isinstance(lac, (str, os.PathLike)):
        raise AdjinvError(f"a LAC checkpoint is a path or a bundled name (str), got "
                          f"{type(lac).__name__}; pass e.g. 'paper' or 'my.lac.safetensors'")
    p = Path(lac)
    plain = isinstance(lac, str) and bool(lac) and "/" not in lac and os.sep not in lac
    variant = bundled_checkpoint(name, str(lac)) if plain else None
    if variant is not None:  # a bundled name wins over a local file of that name
        if p.is_file():
            warnings.warn(f"--lac {lac!r} is the name of a bundled LAC variant, which is used; "
                          f"a local file of that name is ignored (pass ./{lac} to use the "
                          "file)", stacklevel=3)
        return variant
    if p.is_file():
        return p
    have = bundled_variants(name)
    hint = f", or one of the LACs bundled for {name}: {', '.join(have)}" if have else ""
    raise AdjinvError(f"LAC checkpoint {str(lac)!r} does not exist: pass a .safetensors file "
                      f"written by `adjinv train`{hint}")
