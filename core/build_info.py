"""Which build is running: the hot modules compiled with mypyc, or pure Python (setup.py)."""

from __future__ import annotations

import importlib.machinery
import importlib.util

#: modules setup.py compiles; enough to tell the build, they are compiled together or not at all
HOT_MODULES = ("warrenmq.queue", "warrenmq.transports.amqp.connection")


def compiled_modules() -> list[str]:
    """The modules of ``HOT_MODULES`` that are loaded from a compiled extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in HOT_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(suffixes):
            found.append(name)
    return found


def build_name() -> str:
    """``compiled`` or ``pure Python``, as ``warrenmq --version`` and the start-up log say."""
    return "compiled" if compiled_modules() else "pure Python"
