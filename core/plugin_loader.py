"""Plugin loading: every plugin, built-in or not, comes through the ``warrenmq`` entry points.

Each entry point is loaded on its own, so a broken plugin is named in the error instead of
silently stopping the rest. The four standard exchange types (the predeclared ``amq.*``
exchanges need them) and the ``classic`` queue type (the default) are essential and cannot be
blocked.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import Registry

log = logging.getLogger("warrenmq.plugins")

GROUP = "warrenmq"
ESSENTIAL = frozenset({"direct", "fanout", "topic", "headers", "classic-queue"})

#: registry attribute name -> (hook name, kind shown to users)
REGISTRIES = {
    "exchange_types": ("warrenmq_register_exchange_types", "exchange type"),
    "dispatch_policies": ("warrenmq_register_dispatch_policies", "dispatch policy"),
    "queue_types": ("warrenmq_register_queue_types", "queue type"),
    "stores": ("warrenmq_register_stores", "store"),
    "protocols": ("warrenmq_register_protocols", "protocol"),
    "transports": ("warrenmq_register_transports", "transport"),
    "auth_backends": ("warrenmq_register_auth_backends", "auth backend"),
    "config_sections": ("warrenmq_register_config_sections", "config section"),
}


@dataclass
class LoadedPlugin:
    name: str
    package: str
    version: str


@dataclass
class Plugins:
    """The plugin manager plus the registries it filled."""

    manager: pluggy.PluginManager
    loaded: list[LoadedPlugin] = field(default_factory=list)
    registries: dict[str, Registry[Any]] = field(default_factory=dict)

    def registered(self) -> list[tuple[str, str, str, str]]:
        """(kind, name, plugin, package) for everything registered, for ``warrenmq plugins``:
        by kind, then by name (entry points come in ``sys.path`` and directory order, which
        differs between installs)."""
        packages = {p.name: f"{p.package} {p.version}".strip() for p in self.loaded}
        rows = []
        for attribute, (_, kind) in REGISTRIES.items():
            registry = self.registries[attribute]
            for name in sorted(registry):
                plugin = registry.sources[name]
                rows.append((kind, name, plugin, packages.get(plugin, "")))
        return rows


def _distribution(ep: EntryPoint) -> tuple[str, str]:
    """(package, version) that declares ``ep``."""
    dist = ep.dist
    return (dist.name, dist.version) if dist is not None else ("?", "")


def _same_distribution(a: EntryPoint, b: EntryPoint) -> bool:
    if a.dist is None or b.dist is None:
        return a.value == b.value
    return _normalized(a.dist.name) == _normalized(b.dist.name)


def _normalized(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def _entry_points() -> list[EntryPoint]:
    """One entry point per name. The same distribution may be visible twice (an editable and a
    site install): its first copy counts. Two distributions declaring one name are refused:
    which one should load depends on ``sys.path`` order, and the other would silently vanish."""
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        first = seen.setdefault(ep.name, ep)
        if first is not ep and not _same_distribution(first, ep):
            raise PluginError(
                f"plugin name '{ep.name}' is declared by two packages: "
                f"{' '.join(_distribution(first))} ({first.value}) and "
                f"{' '.join(_distribution(ep))} ({ep.value}); uninstall one of them"
            )
    return list(seen.values())


def load_plugins(blocked: frozenset[str] = frozenset(), extra: tuple[Any, ...] = ()) -> Plugins:
    """Load entry-point plugins (minus ``blocked``) and ``extra`` plugin objects; fill registries."""
    bad_blocks = blocked & ESSENTIAL
    if bad_blocks:
        raise PluginError(f"plugins {sorted(bad_blocks)} are essential and cannot be blocked")
    installed = _entry_points()
    unknown = blocked - {ep.name for ep in installed}
    if unknown:
        known = ", ".join(sorted(ep.name for ep in installed))
        raise PluginError(f"cannot block unknown plugins {sorted(unknown)} (installed: {known})")
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    for ep in installed:
        if ep.name in blocked:
            log.info("plugin %r blocked", ep.name)
            continue
        package, version = _distribution(ep)
        try:
            module = ep.load()
            manager.register(module, name=ep.name)
        except Exception as exc:
            raise PluginError(
                f"plugin '{ep.name}' ({package} {version}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        plugins.loaded.append(LoadedPlugin(ep.name, package, version))
    for index, plugin in enumerate(extra):
        name = getattr(plugin, "__name__", None) or f"extra-{index}"
        if manager.is_registered(plugin):
            # e.g. a plugin's tests pass its module while its package is installed
            log.debug("plugin %r is already registered as %r", name, manager.get_name(plugin))
            continue
        try:
            manager.register(plugin, name=name)
        except Exception as exc:
            raise PluginError(f"plugin '{name}' failed to register: {exc}") from exc
        plugins.loaded.append(LoadedPlugin(name, "", ""))
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    for attribute, (hook_name, kind) in REGISTRIES.items():
        registry: Registry[Any] = Registry(kind)
        hook = getattr(manager.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin '{impl.plugin_name}' failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        plugins.registries[attribute] = registry
    missing = {"direct", "fanout", "topic", "headers"} - set(plugins.registries["exchange_types"])
    if "classic" not in plugins.registries["queue_types"]:
        missing.add("classic (queue type)")
    if missing:
        raise PluginError(
            f"essential types {sorted(missing)} are not registered; "
            "is warrenmq installed (pip install warrenmq)?"
        )
    return plugins
