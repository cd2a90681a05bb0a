"""Per-stage results keyed the natural way: by stage index (negative counts from the
deepest stage, as for a list), by stage name, or by the model's own module path
(``"layer4"``, ``"features.7"``), with close-match hints on a miss."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

V = TypeVar("V")


def stage_key_error(key: str, names: Sequence[str], aliases: Sequence[Sequence[str]] = (),
                    others: Iterable[str] = ()) -> str:
    """The message for an unknown stage name: the stages, and the closest known names."""
    known = [*names, *(a for al in aliases for a in al), *others]
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"no stage named {key!r}{hint} The stages are {list(names)}" + (
        " (each also answers to the model's module paths in encoder.stage_aliases)"
        if any(aliases) else "")


def stage_index(key: object, names: Sequence[str], aliases: Sequence[Sequence[str]] = ()) -> int:
    """The non-negative stage index that ``key`` means: an int (negative counts from the
    deepest stage), a stage name, or a module path of the model that ends at that stage
    (``aliases[l]``). Raises ``KeyError`` (with close matches for a name) otherwise."""
    if isinstance(key, str):
        if key in names:
            return list(names).index(key)
        for i, al in enumerate(aliases):
            if key in al:
                return i
        raise KeyError(stage_key_error(key, names, aliases))
    if isinstance(key, bool) or not isinstance(key, int):
        # torch / numpy integer scalars
        try:
            key = int(key)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise KeyError(f"stage keys are ints or stage names, got {key!r}") from None
    assert isinstance(key, int)
    n = len(names)
    if key >= 0:
        return key
    if n == 0:
        raise KeyError(f"stage {key}: negative indices need the encoder's stage names "
                       "(results of adjinv.Inverter / AdjointInverter.invert carry them)")
    if key < -n:
        raise KeyError(f"stage {key} out of range for an encoder with {n} stages")
    return key + n


class StageDict(dict[Any, V]):
    """A ``dict`` from stage index ``l`` (0 = stem) to a value, that also accepts
    negative indices (``-1`` is the deepest stage of the encoder, not the deepest key
    present), stage names and the model's module paths. Keys are stored as
    non-negative ints, so iteration, ``keys()`` and equality are those of a plain dict.

    Args:
        data: initial ``{stage index: value}`` items.
        names: the encoder's stage names in order (``len(names)`` stages); without them
            only non-negative indices work.
        aliases: per stage, the module paths of the model whose output is that stage's
            output (``StagedEncoder.stage_aliases``).
        extras: also hold string keys that name no stage (the deepest stage's extra
            syntheses, e.g. ``"class"``), stored as they are.
    """

    def __init__(self, data: Mapping[Any, V] | Iterable[tuple[Any, V]] = (),
                 names: Iterable[str] = (), aliases: Iterable[Sequence[str]] = (),
                 extras: bool = False) -> None:
        super().__init__()
        self.names: tuple[str, ...] = tuple(names)
        self.aliases: tuple[tuple[str, ...], ...] = tuple(tuple(a) for a in aliases)
        self.extras = extras
        for k, v in dict(data).items():
            self[k] = v

    def index(self, key: object) -> int | str:
        """The non-negative stage index that ``key`` (int, negative int, name or module
        path) means; with ``extras``, a string naming no stage is returned as it is."""
        return self._resolve(key, setting=False)

    def _resolve(self, key: object, setting: bool) -> int | str:
        if self.extras and isinstance(key, str) and key not in self.names and not any(
                key in a for a in self.aliases):
            if not setting and not dict.__contains__(self, key):
                others = [k for k in dict.keys(self) if isinstance(k, str)]
                raise KeyError(stage_key_error(key, self.names, self.aliases, others))
            return key
        return stage_index(key, self.names, self.aliases)

    def __getitem__(self, key: object) -> V:
        return super().__getitem__(self.index(key))

    def __setitem__(self, key: object, value: V) -> None:
        super().__setitem__(self._resolve(key, setting=True), value)

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
