"""Logging a bug without flooding the log: a traceback the first time a failure happens at a
place, one line after that. A client that keeps sending the input that triggers a bug (or a
plugin that fails on every message) costs one traceback, not one per message.
"""

from __future__ import annotations

import logging
import traceback

#: frames logged from each end of a traceback (a runaway recursion has a thousand)
TRACE_FRAMES = 10
#: places already logged with a traceback; past this many, everything is one line
MAX_TRACED = 100
_traced: set[tuple[str, str, int]] = set()


def short_traceback(exc: BaseException) -> str:
    stack = traceback.extract_tb(exc.__traceback__)
    lines = ["Traceback (most recent call last):\n"]
    if len(stack) <= 2 * TRACE_FRAMES:
        lines += stack.format()
    else:
        lines += traceback.StackSummary.from_list(stack[:TRACE_FRAMES]).format()
        lines.append(f"  ... {len(stack) - 2 * TRACE_FRAMES} frames left out ...\n")
        lines += traceback.StackSummary.from_list(stack[-TRACE_FRAMES:]).format()
    return "".join(lines).rstrip()


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log ``what`` failed with ``exc``: with a short traceback the first time at its place."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = (type(exc).__name__, tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb else None
    summary = f"{type(exc).__name__}: {str(exc)[:200]!r}"
    if where is None or where in _traced or len(_traced) >= MAX_TRACED:
        logger.error("%s: %s (traceback not repeated)", what, summary)
        return
    _traced.add(where)
    logger.error("%s: %s\n%s", what, summary, short_traceback(exc))
