"""The docs keep up with the code: every hook is documented with its exact signature, the
README shows how to run and test the broker, and the configuration page names every flag and
setting."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import warrenmq
from warrenmq import hookspecs
from warrenmq.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PLUGIN_GUIDE = ROOT / "docs" / "writing-a-plugin.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"


def _lines(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines()}


def _headings(path: Path) -> set[str]:
    """Markdown heading texts, without the leading #s and backticks."""
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            found.add(match.group(1).strip().strip("`").strip())
    return found


def _hook_signatures() -> dict[str, str]:
    """Hook name -> its ``def`` line as written in hookspecs.py (annotations as source)."""
    tree = ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8"))
    signatures = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("warrenmq_"):
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            signatures[node.name] = f"def {node.name}({ast.unparse(node.args)}){returns}:"
    return signatures


HOOKS = _hook_signatures()


def test_hookspecs_are_found() -> None:
    assert "warrenmq_register_exchange_types" in HOOKS
    assert len(HOOKS) >= 8


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_heading_and_its_signature(name: str) -> None:
    assert name in _headings(PLUGIN_GUIDE), f"docs/writing-a-plugin.md: no heading for {name}"
    assert HOOKS[name] in _lines(PLUGIN_GUIDE), (
        f"docs/writing-a-plugin.md: signature line missing or outdated: {HOOKS[name]}"
    )


def test_no_heading_for_a_hook_that_does_not_exist() -> None:
    documented = {h for h in _headings(PLUGIN_GUIDE) if re.fullmatch(r"warrenmq_\w+", h)}
    assert documented <= set(HOOKS), (
        f"documented but not in hookspecs.py: {documented - set(HOOKS)}"
    )


@pytest.mark.parametrize(
    "command",
    ["warrenmq run", "python -m pytest", "pip install -e '.[test,speed]'", "warrenmq plugins"],
)
def test_readme_shows_the_commands(command: str) -> None:
    lines = {line.removeprefix("$ ") for line in _lines(README)}  # console blocks too
    assert any(line == command or line.startswith(command + " ") for line in lines), (
        f"README.md has no line with the command: {command}"
    )


def _run_flags(capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    return set(re.findall(r"(--[a-z][a-z-]*)", capsys.readouterr().out)) - {"--help"}


def test_configuration_names_every_run_flag(capsys: pytest.CaptureFixture[str]) -> None:
    flags = _run_flags(capsys)
    assert "--port" in flags
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(flag for flag in flags if f"`{flag}" not in text)
    assert not missing, f"docs/configuration.md does not mention {missing}"


def test_configuration_names_every_settings_field() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    fields = [field.name for field in dataclasses.fields(warrenmq.Settings)]
    missing = [name for name in fields if f"`{name}`" not in text]
    assert not missing, f"docs/configuration.md does not mention Settings fields {missing}"
