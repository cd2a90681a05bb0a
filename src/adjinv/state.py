"""Temporary module state, always restored (hooks and modes never leak)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (else buffer), CPU if it has neither:
    adjinv never assumes a global device, it follows the model."""
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def to_module(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``x`` on ``module``'s device and, when ``x`` is floating point, in the dtype of
    ``module``'s first floating-point parameter (float32 if it has none)."""
    dt = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    return x.to(device=module_device(module), dtype=dt if x.is_floating_point() else x.dtype)


def parse_device(name: str, option: str = "--device") -> torch.device:
    """A torch device from a user's string, refused with the fix when it is not one or
    is not present here."""
    from .errors import AdjinvError

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as e:
        raise AdjinvError(f"{option} {name!r} is not a torch device ({e}); use cpu or "
                          "cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdjinvError(f"{option} {name}: PyTorch sees no CUDA device here "
                          "(torch.cuda.is_available() is False); use --device cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise AdjinvError(f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) "
                          "visible")
    return dev


M = TypeVar("M", bound=nn.Module)


# Re-entrant, thread-safe freezing: the first holder of a module saves its modes and flags,
# the last one to leave restores them; holders in between (nested calls, other threads
# sharing one Inverter) change nothing, so no thread restores a state another saved
# while it was frozen.
_LOCK = threading.RLock()
_HELD: dict[tuple[int, str], tuple[int, list]] = {}  # (id, what) -> (holders, saved)


@contextmanager
def _hold(module: nn.Module, what: str) -> Iterator[None]:
    """Hold ``module`` in eval mode (``what="modes"``) or without parameter gradients
    (``"flags"``) for as long as anyone holds it."""
    key = (id(module), what)
    with _LOCK:
        count, saved = _HELD.get(key, (0, []))
        if count == 0:
            if what == "modes":
                saved = [(m, m.training) for m in module.modules()]
                module.eval()
            else:
                saved = [(p, p.requires_grad) for p in module.parameters()]
                for p, _ in saved:
                    p.requires_grad_(False)
        _HELD[key] = (count + 1, saved)
    try:
        yield
    finally:
        with _LOCK:
            count, saved = _HELD.pop(key)
            if count > 1:
                _HELD[key] = (count - 1, saved)
            elif what == "modes":
                for m, t in saved:
                    m.training = t
            else:
                for p, r in saved:
                    p.requires_grad_(r)


@contextmanager
def eval_mode(module: M) -> Iterator[M]:
    """``module`` in eval mode inside; every submodule's previous mode outside, even on
    error, also when several threads or nested calls hold it at once."""
    with _hold(module, "modes"):
        yield module


@contextmanager
def frozen(module: M) -> Iterator[M]:
    """Eval mode and ``requires_grad=False`` inside; the previous modes and flags outside
    (re-entrant and thread-safe: the last holder restores what the first one saw)."""
    with _hold(module, "modes"), _hold(module, "flags"):
        yield module
