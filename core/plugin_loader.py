"""Plugin loading: every plugin, built-in or not, comes through the ``warrenmq`` entry points.

Each entry point is loaded on its own, so a broken plugin is named in the error instead of
silently stopping the rest. The four standard exchange types (the predeclared ``amq.*``
exchanges need them) and the ``classic`` queue type (the default) are essential and cannot be
blocked.
"""

from __future__ import annotations

import logging
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
        """(kind, name, plugin, package) for everything registered, for ``warrenmq plugins``."""
        packages = {p.name: f"{p.package} {p.version}".strip() for p in self.loaded}
        rows = []
        for attribute, (_, kind) in REGISTRIES.items():
            registry = self.registries[attribute]
            for name in registry:
                plugin = registry.sources[name]
                rows.append((kind, name, plugin, packages.get(plugin, "")))
        return rows


def _entry_points() -> list[EntryPoint]:
    seen: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        seen.setdefault(ep.name, ep)  # the same dist may be visible twice (editable + site)
    return list(seen.values())


def load_plugins(blocked: frozenset[str] = frozenset(), extra: tuple[Any, ...] = ()) -> Plugins:
    """Load entry-point plugins (minus ``blocked``) and ``extra`` plugin objects; fill registries."""
    bad_blocks = blocked & ESSENTIAL
    if bad_blocks:
        raise PluginError(f"plugins {sorted(bad_blocks)} are essential and cannot be blocked")
    unknown = blocked - {ep.name for ep in _entry_points()}
    if unknown:
        known = ", ".join(sorted(ep.name for ep in _entry_points()))
        raise PluginError(f"cannot block unknown plugins {sorted(unknown)} (installed: {known})")
    manager = pluggy.PluginManager(GROUP)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    for ep in _entry_points():
        if ep.name in blocked:
            log.info("plugin %r blocked", ep.name)
            continue
        dist = ep.dist
        package, version = (dist.name, dist.version) if dist is not None else ("?", "")
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
