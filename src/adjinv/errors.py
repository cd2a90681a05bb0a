"""The one exception type users see: a message naming the problem and the fix; and the
one place warnings are captured for a report (a log line, a CLI message)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class AdjinvError(ValueError):
    """A user error (bad input, wrong file, impossible request).

    The message always says what is wrong and what to do instead; the CLI prints
    it as a single line without a traceback.
    """


@contextmanager
def captured_warnings(report: Callable[[str], None] | None = None
                      ) -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised inside the block instead of printing it.

    Args:
        report: called with each warning's message, in order, when the block ends
            without an error (``None``: only record).

    Returns:
        A context manager yielding the list of recorded warnings (filled when the block
        ends), for callers that also look at them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    if report is not None:
        for w in caught:
            report(str(w.message))
