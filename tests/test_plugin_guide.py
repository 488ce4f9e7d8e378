"""The plugin guide's examples work as shown: docs/writing-a-plugin.md is the test input.

Code blocks whose first line names a file (``# first-word/src/warrenmq_first_word.py``) are
written out into one directory per project; each project's own tests (from the guide) then
run with pytest, and each project with a ``pyproject.toml`` is installed as pip would install
it (its entry points in a ``*.dist-info``), after which ``warrenmq plugins`` must print the
rows the guide shows. Blocks marked ``(excerpt)`` quote the example packages under examples/
and must match them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from dists import install_distribution

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-a-plugin.md"

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_LABEL = re.compile(r"^# (?P<path>[\w./-]+)(?P<excerpt> \(excerpt\))?$")


@dataclass(frozen=True)
class Block:
    language: str
    text: str  # dedented, without the fences
    line: int  # where it starts in the guide


def _blocks(markdown: str) -> list[Block]:
    """Fenced code blocks, including those indented in list items."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, language = opening.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != f"{indent}```":
            body.append(lines[j])
            j += 1
        blocks.append(Block(language, textwrap.dedent("\n".join(body)) + "\n", i + 1))
        i = j + 1
    return blocks


BLOCKS = _blocks(GUIDE.read_text(encoding="utf-8"))


def _files() -> dict[str, str]:
    """Project files of the guide: path (``project/...``) -> content."""
    files = {}
    for block in BLOCKS:
        first, _, rest = block.text.partition("\n")
        label = _LABEL.match(first)
        if label and not label["excerpt"] and not label["path"].startswith("examples/"):
            assert label["path"] not in files, f"{label['path']} shown twice in the guide"
            files[label["path"]] = rest if block.language == "toml" else block.text
    return files


def _excerpts() -> list[tuple[str, str, int]]:
    found = []
    for block in BLOCKS:
        first, _, rest = block.text.partition("\n")
        label = _LABEL.match(first)
        if label and label["excerpt"]:
            found.append((label["path"], rest, block.line))
    return found


FILES = _files()
PROJECTS = sorted({path.split("/", 1)[0] for path in FILES})


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guide")
    for path, text in FILES.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


def test_the_guide_has_the_projects_it_walks_through() -> None:
    assert PROJECTS == ["first-word", "lifo", "random-dispatch"]
    for project in ("first-word", "random-dispatch"):
        names = {path.split("/", 1)[1] for path in FILES if path.startswith(f"{project}/")}
        assert "pyproject.toml" in names
        assert any(name.startswith("src/") for name in names)
        assert any(name.startswith("tests/test_") for name in names)


@pytest.mark.parametrize("project", PROJECTS)
def test_each_project_passes_its_own_tests(projects: Path, project: str) -> None:
    """``PYTHONPATH=src python -m pytest`` in the project, as step 2 says."""
    env = {**os.environ, "PYTHONPATH": str(projects / project / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=projects / project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ passed", result.stdout)
    assert "skipped" not in result.stdout


def _rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("project", [p for p in PROJECTS if f"{p}/pyproject.toml" in FILES])
def test_installed_project_is_listed_as_the_guide_shows(
    projects: Path, tmp_path: Path, project: str
) -> None:
    """Install the project's entry points as pip would, then compare ``warrenmq plugins``
    with the rows of the guide that name the project's distribution."""
    meta = tomllib.loads(FILES[f"{project}/pyproject.toml"])
    name, version = meta["project"]["name"], meta["project"]["version"]
    entry_points = meta["project"]["entry-points"]["warrenmq"]
    modules = {
        module: (projects / project / "src" / f"{module}.py").read_text(encoding="utf-8")
        for module in meta["tool"]["setuptools"]["py-modules"]
    }
    assert set(entry_points.values()) <= set(modules), "entry points name the project's modules"
    site = install_distribution(tmp_path / "site", name, version, entry_points, modules)
    result = subprocess.run(
        [sys.executable, "-m", "warrenmq", "plugins"],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "FAILED" not in result.stdout, result.stdout
    listed = _rows(result.stdout)
    shown = [
        row
        for block in BLOCKS
        if block.language == "console" and "$ warrenmq plugins" in block.text
        for row in _rows(block.text)
        if row[-1] == f"{name} {version}"
    ]
    assert shown, f"the guide shows no `warrenmq plugins` row for {name}"
    for row in shown:
        assert row in listed, f"{row} not in:\n{result.stdout}"


@pytest.mark.parametrize(("path", "excerpt", "line"), _excerpts())
def test_excerpts_match_the_example_packages(path: str, excerpt: str, line: int) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert excerpt.strip("\n") in source, (
        f"docs/writing-a-plugin.md line {line}: the excerpt of {path} is out of date"
    )


def test_the_guide_quotes_both_example_packages() -> None:
    quoted = {path.split("/")[1] for path, _, _ in _excerpts()}
    assert quoted == {"consistent-hash", "delayed-message"}
