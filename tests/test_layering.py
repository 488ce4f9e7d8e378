"""The layering rule from the design: the core finds plugins and transports only through entry
points, and plugins and transports meet only in the core's interfaces. The core and the
built-in plugins know no protocol: no wire-format library is imported outside transports/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"core": "warrenmq", "plugins": "warrenmq.plugins", "transports": "warrenmq.transports"}
#: libraries that encode or decode a protocol's bytes: only protocol engines may use them
WIRE_LIBRARIES = ("pamqp", "paho", "websockets", "wsproto", "h11", "amqtt", "gmqtt")
FORBIDDEN = {
    "core": ("warrenmq.plugins", "warrenmq.transports", *WIRE_LIBRARIES),
    "plugins": ("warrenmq.transports", *WIRE_LIBRARIES),
    "transports": ("warrenmq.plugins",),
}


def _imports(path: Path, package: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_forbidden_imports(folder: str) -> None:
    broken = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT / folder)
        package = ".".join([PACKAGES[folder], *rel.parent.parts])
        for name in _imports(path, package):
            if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[folder]):
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "\n".join(broken)
