"""The optional compiled build: the hot modules compiled with mypyc when a wheel is built.

Everything else about the package is in pyproject.toml. ``pip install .`` on a machine with a C
compiler compiles the modules in ``COMPILED`` (the same source, run as C extensions); so does
``pip install -e .``, which puts the extensions next to the sources, where they take precedence
over the ``.py`` files (edit one and reinstall, or install pure). With ``WARRENMQ_PURE=1`` in the
environment, without mypyc or when compiling fails, the package is pure Python and works the
same. Every build first removes the extensions a previous build left behind (an editable one
those in the source tree), so a pure reinstall never runs stale compiled code. ``warrenmq --version`` and the
start-up log say which build is running.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: where each package's source lives (pyproject.toml's package-dir)
PACKAGE_DIRS = {
    "warrenmq": "core",
    "warrenmq.plugins": "plugins",
    "warrenmq.transports": "transports",
}

#: the modules on the path of every message; docs/performance.md says what each gains
COMPILED = [
    "warrenmq/message.py",
    "warrenmq/exchange.py",
    "warrenmq/consumer.py",
    "warrenmq/dispatch.py",
    "warrenmq/queue.py",
    "warrenmq/session.py",
    "warrenmq/vhost.py",
    "warrenmq/plugins/classic_queue.py",
    "warrenmq/plugins/direct.py",
    "warrenmq/plugins/round_robin.py",
    "warrenmq/transports/amqp/channel.py",
    "warrenmq/transports/amqp/connection.py",
    "warrenmq/transports/amqp/consumer.py",
    "warrenmq/transports/mqtt/connection.py",
    "warrenmq/transports/mqtt/packets.py",
    "warrenmq/transports/mqtt/state.py",
    "warrenmq/transports/mqtt/topics.py",
]

ROOT = Path(__file__).resolve().parent


def _stage() -> Path:
    """A copy of the source laid out as the installed package, so that mypyc names each
    module as Python will import it (``core/queue.py`` is ``warrenmq.queue``)."""
    stage = ROOT / "build" / "mypyc-src"
    shutil.rmtree(stage, ignore_errors=True)
    for package in ("warrenmq", "warrenmq.plugins", "warrenmq.transports"):
        source = ROOT / PACKAGE_DIRS[package]
        target = stage.joinpath(*package.split("."))
        for path in source.rglob("*.py"):
            relative = path.relative_to(source)
            if package == "warrenmq" and relative.parts[0] in ("plugins", "transports"):
                continue
            if "__pycache__" in relative.parts:
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
    return stage


#: the setup.py commands that build (pip runs ``egg_info`` alone to read the metadata)
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _building() -> bool:
    return not BUILD_COMMANDS.isdisjoint(sys.argv[1:])


def _wanted() -> bool:
    return os.environ.get("WARRENMQ_PURE", "") in ("", "0")


def _in_place() -> bool:
    """An editable install: the extensions go next to the sources."""
    return "editable_wheel" in sys.argv or "develop" in sys.argv or "--inplace" in sys.argv


def _remove_stale_extensions() -> None:
    """Delete compiled modules of an earlier build. An extension next to a ``.py`` file (an
    editable install puts them there) is imported instead of it, so an in-place build clears
    the source tree; every build clears ``build/``, whose contents a wheel would pick up."""
    for path in (ROOT / "build").glob("lib.*"):
        shutil.rmtree(path, ignore_errors=True)
    if not _in_place():
        return
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for directory in PACKAGE_DIRS.values():
        for path in (ROOT / directory).rglob("*"):
            if path.name.endswith(suffixes):
                path.unlink()
    for path in ROOT.glob("*__mypyc*"):  # mypyc's shared library, a top-level module
        if path.name.endswith(suffixes):
            path.unlink()


class OptionalBuildExt(build_ext):
    """Build the compiled modules if the machine can; otherwise say so and install pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler, missing headers: pure Python still works
            message = f"warrenmq: compiled modules not built ({error}); installing pure Python"
            print(message, file=sys.stderr)
            for output in self.get_outputs():  # a half-built set would fail to import
                Path(output).unlink(missing_ok=True)
            self.extensions = []


def _extensions() -> list:
    if not _building():
        return []
    _remove_stale_extensions()
    if not _wanted():
        print("warrenmq: WARRENMQ_PURE is set; installing pure Python", file=sys.stderr)
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("warrenmq: mypyc not available; installing pure Python", file=sys.stderr)
        return []
    stage = _stage()
    cwd = os.getcwd()
    os.chdir(stage)  # mypyc derives module names from paths relative to here
    try:
        return mypycify(COMPILED, opt_level="3", target_dir=str(ROOT / "build" / "mypyc-c"))
    except (Exception, SystemExit) as error:
        print(f"warrenmq: mypyc failed ({error}); installing pure Python", file=sys.stderr)
        return []
    finally:
        os.chdir(cwd)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
