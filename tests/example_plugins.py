"""The example plugin packages under examples/, as the tests use them.

CI installs them with pip (``.ci/run``), which exercises their packaging. Where they are not
installed (a checkout where only warrenmq was installed), ``make_importable`` does what pip
would leave behind: a ``*.dist-info`` with the entry points of each example's
``pyproject.toml``, and the example's ``src`` directory on the path. Either way the tests run;
they never skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from dists import install_distribution
from line_reader import LineReader

TIMEOUT = 10.0
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: what subprocess brokers need on PYTHONPATH to see examples that are not installed
PYTHONPATH: list[str] = []


def _installed(package: str) -> bool:
    try:
        distribution(package)
    except PackageNotFoundError:
        return False
    return True


def make_importable(site: Path) -> None:
    """Make every example package that is not installed importable, with its entry points,
    in this process (``sys.path``) and in brokers started by ``broker_process``."""
    for project in sorted(EXAMPLES.glob("*/pyproject.toml")):
        meta = tomllib.loads(project.read_text(encoding="utf-8"))["project"]
        if _installed(meta["name"]):
            continue
        install_distribution(site, meta["name"], meta["version"], meta["entry-points"]["warrenmq"])
        PYTHONPATH.append(str(project.parent / "src"))
    if PYTHONPATH:
        PYTHONPATH.insert(0, str(site))
        sys.path.extend(PYTHONPATH)


@contextmanager
def broker_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], LineReader, int]]:
    """``warrenmq run --port 0 ARGS`` as a user runs it: (process, its stderr, its AMQP port).

    On leaving, the broker is stopped with SIGINT (its shutdown hooks run and log) and waited for.
    """
    env = dict(os.environ)
    if PYTHONPATH:
        env["PYTHONPATH"] = os.pathsep.join([*PYTHONPATH, env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, "-m", "warrenmq", "run", "--port", "0", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    reader = LineReader(process.stderr)
    try:
        port = int(reader.wait_for("listening for amqp").rsplit(":", 1)[1])
        yield process, reader, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
