"""Throwaway installed distributions: a ``*.dist-info`` with ``entry_points.txt`` (what pip
leaves in site-packages) plus the plugin's module, in a directory a test puts on ``sys.path``
or ``PYTHONPATH``."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_distribution(
    site: Path,
    name: str,
    version: str,
    entry_points: dict[str, str],
    modules: dict[str, str] | None = None,
) -> Path:
    """Write distribution ``name`` declaring ``warrenmq`` entry points into ``site``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep_name} = {target}\n" for ep_name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[warrenmq]\n{lines}")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site
