"""Plugin loading: every plugin, built-in or not, comes through the ``warrenmq`` entry points.

Each entry point is loaded on its own. An optional one that fails to import or to register is
logged by name with the reason and skipped (``Plugins.failed``, shown by ``warrenmq plugins``):
one broken package does not take the broker down. The four standard exchange types (the
predeclared ``amq.*`` exchanges need them) and the ``classic`` queue type (the default) are
essential: they cannot be blocked, and their failure stops start-up. Plugin objects passed in
code (``Broker(plugins=[...])``) are the caller's own, so their failures raise as well.
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
from .registry import NameTaken, Registry

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
class FailedPlugin:
    """An optional plugin that was skipped: it failed to import or to register."""

    name: str
    package: str
    version: str
    reason: str

    def describe(self) -> str:
        package = f"{self.package} {self.version}".strip()
        return (
            f"{self.name} ({package}): {self.reason}" if package else f"{self.name}: {self.reason}"
        )


@dataclass
class Plugins:
    """The plugin manager plus the registries it filled."""

    manager: pluggy.PluginManager
    loaded: list[LoadedPlugin] = field(default_factory=list)
    registries: dict[str, Registry[Any]] = field(default_factory=dict)
    #: optional plugins that failed and were skipped, in the order they failed
    failed: list[FailedPlugin] = field(default_factory=list)
    #: names of the plugins whose failure stops start-up (essential, or passed in code)
    strict: set[str] = field(default_factory=set)

    def fail(self, name: str, reason: str, package: str = "", version: str = "") -> None:
        """Skip plugin ``name``: log it, forget what it registered, keep the reason."""
        loaded = next((p for p in self.loaded if p.name == name), None)
        if loaded is not None:
            package, version = loaded.package, loaded.version
        failure = FailedPlugin(name, package, version, reason)
        log.error("plugin %s; skipped", failure.describe())
        self.failed.append(failure)
        self.loaded = [p for p in self.loaded if p.name != name]
        for registry in self.registries.values():
            registry.discard_plugin(name)
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin)

    def failure_note(self) -> str:
        """`` (plugins that failed: ...)`` to add to an error about something missing."""
        if not self.failed:
            return ""
        return " (plugins that failed: " + "; ".join(f.describe() for f in self.failed) + ")"

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


class _PluginManager(pluggy.PluginManager):
    """Also takes an undecorated function named after a hook as its implementation: a module
    compiled with mypyc cannot carry pluggy's marker attribute on its functions (pytest
    recognises its ``pytest_`` functions by name the same way)."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("warrenmq_") and hasattr(hookspecs, name):
            return {}
        return opts


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
    manager = _PluginManager(GROUP)
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
            if ep.name in ESSENTIAL:
                raise PluginError(
                    f"plugin '{ep.name}' ({package} {version}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            reason = f"failed to load: {type(exc).__name__}: {exc}"
            plugins.fail(ep.name, reason, package, version)
            continue
        if ep.name in ESSENTIAL:
            plugins.strict.add(ep.name)
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
        plugins.strict.add(name)
        plugins.loaded.append(LoadedPlugin(name, "", ""))
    _check_hooks(plugins)
    for attribute, (_, kind) in REGISTRIES.items():
        plugins.registries[attribute] = Registry(kind)
    for attribute, (hook_name, _) in REGISTRIES.items():
        registry = plugins.registries[attribute]
        hook = getattr(manager.hook, hook_name)
        arguments = {"registry": registry}
        for impl in hook.get_hookimpls():  # registration order
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(*(arguments[name] for name in impl.argnames))
            except Exception as exc:
                strict = impl.plugin_name in plugins.strict
                if isinstance(exc, NameTaken) or (strict and isinstance(exc, PluginError)):
                    raise  # a name registered twice: which one to keep is the operator's call
                reason = f"failed in {hook_name}: {type(exc).__name__}: {exc}"
                if strict:
                    raise PluginError(f"plugin '{impl.plugin_name}' {reason}") from exc
                plugins.fail(impl.plugin_name, reason)
    missing = {"direct", "fanout", "topic", "headers"} - set(plugins.registries["exchange_types"])
    if "classic" not in plugins.registries["queue_types"]:
        missing.add("classic (queue type)")
    if missing:
        raise PluginError(
            f"essential types {sorted(missing)} are not registered; "
            "is warrenmq installed (pip install warrenmq)?"
        )
    return plugins


def _check_hooks(plugins: Plugins) -> None:
    """Every hook implementation names a known hook. An optional plugin that implements an
    unknown one is skipped; a strict one is an error."""
    for hook_name, caller in list(vars(plugins.manager.hook).items()):
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin_name not in plugins.strict and not impl.optionalhook:
                plugins.fail(impl.plugin_name, f"implements an unknown hook {hook_name}")
    try:
        plugins.manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
