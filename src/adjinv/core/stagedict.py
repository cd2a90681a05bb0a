"""Per-stage results keyed the natural way: by stage index (negative counts from the
deepest stage, as for a list) or by stage name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

V = TypeVar("V")


class StageDict(dict[int, V]):
    """A ``dict`` from stage index ``l`` (0 = stem) to a value, that also accepts
    negative indices (``-1`` is the deepest stage of the encoder, not the deepest key
    present) and stage names. Keys are stored as non-negative ints, so iteration,
    ``keys()`` and equality are those of a plain dict.

    Args:
        data: initial ``{stage index: value}`` items.
        names: the encoder's stage names in order (``len(names)`` stages); without them
            only non-negative indices work.
    """

    def __init__(self, data: Mapping[int, V] | Iterable[tuple[int, V]] = (),
                 names: Iterable[str] = ()) -> None:
        super().__init__()
        self.names: tuple[str, ...] = tuple(names)
        for k, v in dict(data).items():
            self[k] = v

    def index(self, key: object) -> int:
        """The non-negative stage index that ``key`` (int, negative int or name) means."""
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no stage named {key!r}; the stages are {list(self.names)}")
            return self.names.index(key)
        if isinstance(key, bool) or not isinstance(key, int):
            # torch / numpy integer scalars
            try:
                key = int(key)  # type: ignore[call-overload]
            except (TypeError, ValueError):
                raise KeyError(f"stage keys are ints or stage names, got {key!r}") from None
        assert isinstance(key, int)
        if key >= 0:
            return key
        n = len(self.names)
        if n == 0:
            raise KeyError(f"stage {key}: negative indices need the encoder's stage names "
                           "(results of adjinv.Inverter / AdjointInverter.invert carry them)")
        if key < -n:
            raise KeyError(f"stage {key} out of range for an encoder with {n} stages")
        return key + n

    def __getitem__(self, key: object) -> V:
        return super().__getitem__(self.index(key))

    def __setitem__(self, key: object, value: V) -> None:
        super().__setitem__(self.index(key), value)

    def __delitem__(self, key: object) -> None:
        super().__delitem__(self.index(key))

    def __contains__(self, key: object) -> bool:
        try:
            return super().__contains__(self.index(key))
        except KeyError:
            return False

    def get(self, key: object, default: Any = None) -> Any:
        """``self[key]`` if present, else ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def __repr__(self) -> str:
        return f"StageDict({dict.__repr__(self)}, names={self.names})"
