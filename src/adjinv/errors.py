"""The one exception type users see: a message naming the problem and the fix."""

from __future__ import annotations


class AdjinvError(ValueError):
    """A user error (bad input, wrong file, impossible request).

    The message always says what is wrong and what to do instead; the CLI prints
    it as a single line without a traceback.
    """
