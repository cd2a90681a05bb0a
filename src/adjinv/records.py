"""The one JSON-ready form of the package's result records (dataclasses of plain numbers
and strings), used for checkpoint metadata and results.json files alike."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class Record:
    """Mixin for a dataclass of plain values: [`to_dict()`][to_dict] is its JSON-ready form."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``dataclasses.asdict``)."""
        return asdict(self)  # type: ignore[call-overload]
