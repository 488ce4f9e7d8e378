"""The broker: settings, plugin registries, virtual hosts, and the listeners' lifetime."""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .access import Access, AccessFile
from .auth import AuthBackend, LoginResult, Logins, User, UserDatabase
from .definitions import Definitions
from .definitions import apply as apply_definitions
from .disk import DEFAULT_LIMIT, DiskMonitor, format_size, free_disk_space, limit_bytes
from .dispatch import DispatchPolicy
from .errors import BrokerError, ConfigError, PluginError
from .exchange import ExchangeType
from .limits import LimitTracker, UserLimits, VhostLimits
from .memory import default_limit, resident_memory
from .paging import PagingSpace
from .plugin_loader import Plugins, load_plugins
from .policy import Policy, PolicyError
from .protocol import ListenerSpec, Protocol, ProtocolConnection, Transport
from .queue import Queue
from .registry import Registry
from .services import Services
from .store import Store
from .timers import Timers
from .tls import TLSOptions
from .vhost import VirtualHost
from .views import ConnectionView

log = logging.getLogger("warrenmq")

#: bytes a message costs beyond its body (objects and bookkeeping), for memory accounting
MESSAGE_OVERHEAD = 320
#: resident memory this many times the limit raises the alarm even if accounting says less
RESIDENT_GUARD = 1.5


@dataclass
class Settings:
    """Everything a broker needs to start; the CLI (and later the config file) fills it."""

    host: str = "127.0.0.1"
    amqp_port: int = 5672
    data_dir: Path | None = None
    default_dispatch: str = "round-robin"
    store: str = "memory"
    #: seconds the broker proposes in connection.tune (0 disables)
    heartbeat: int = 60
    #: largest frame proposed in connection.tune and accepted (clients may negotiate it down)
    frame_max: int = 131072
    #: most channels open at once on one connection (clients may negotiate it down)
    channel_max: int = 2047
    #: largest message body accepted, as RabbitMQ's max_message_size (at most 512 MiB)
    max_message_size: int = 128 * 1024 * 1024
    #: seconds a client has from connecting to connection.open (RabbitMQ's handshake_timeout)
    handshake_timeout: float = 10.0
    #: limits per virtual host name (RabbitMQ's set_vhost_limits), as VhostLimits or in
    #: RabbitMQ's JSON form ({"max-connections": 10}); absent means none
    vhost_limits: Mapping[str, VhostLimits | Mapping[str, Any]] = field(default_factory=dict)
    #: limits per user name (RabbitMQ's set_user_limits), likewise; absent means none
    user_limits: Mapping[str, UserLimits | Mapping[str, Any]] = field(default_factory=dict)
    #: block publishers above this much memory held, in bytes (None: a fraction of RAM)
    memory_limit: int | None = None
    #: that fraction of physical memory, RabbitMQ's default high watermark (0 disables)
    memory_high_watermark: float = 0.4
    #: seconds between memory checks
    memory_check_interval: float = 0.25
    #: each queue's memory budget, unless its arguments or policy say otherwise
    #: (``x-max-in-memory-length`` / ``-bytes``): ready messages beyond this many, or beyond
    #: this many bytes of bodies, wait on disk (see docs/durability.md)
    max_in_memory_length: int = 200_000
    max_in_memory_bytes: int = 64 * 1024 * 1024
    #: seconds between two looks at the queues over their memory budget
    paging_interval: float = 0.1
    #: resident memory, the second guard (default: this process's resident set size)
    memory_gauge: Callable[[], int | None] = resident_memory
    #: block publishers while the filesystem of a disk store's data directory has less free
    #: space than this, in bytes (RabbitMQ's ``disk_free_limit``, 50 MB; 0 turns it off)
    disk_free_limit: int = DEFAULT_LIMIT
    #: the limit as a multiple of physical memory instead (RabbitMQ's ``mem_relative``)
    disk_free_limit_relative: float | None = None
    #: longest seconds between free-space checks (sooner as free space nears the limit)
    disk_check_interval: float = 10.0
    #: bytes free on the filesystem of a directory (None: unknown); default ``statvfs``
    disk_free_gauge: Callable[[Path], int | None] = free_disk_space
    #: seconds connections get to close cleanly at shutdown
    shutdown_grace: float = 5.0
    blocked_plugins: frozenset[str] = frozenset()
    #: plugins already loaded while checking a config file (``config.load``): the first broker
    #: built from these settings takes them, so each plugin is loaded and reported once
    loaded_plugins: Plugins | None = field(default=None, compare=False, repr=False)
    #: explicit listeners; None means one AMQP listener on host:amqp_port (and one over TLS
    #: on host:tls_port when ``tls`` is set)
    listeners: list[ListenerSpec] | None = None
    #: AMQP over TLS port (RabbitMQ's 5671) for the default listeners; needs ``tls``
    tls_port: int | None = None
    tls: TLSOptions | None = None
    #: virtual hosts that always exist (more come from users' access, see ``access``)
    vhosts: tuple[str, ...] = ("/",)
    #: topology to declare at start, in order, after the store has opened: definitions files
    #: and a config file's exchanges, queues, bindings and policies
    definitions: list[Definitions] = field(default_factory=list)
    #: each plugin config section's values by section name (defaults filled in; see
    #: ``warrenmq_register_config_sections``)
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: users, vhosts and permissions from the config file, applied over the data directory's
    #: access file (see docs/security.md); None: that file alone, or the default guest
    access: Access | None = None
    #: users who may log in from loopback addresses only (RabbitMQ's loopback_users)
    loopback_users: frozenset[str] = frozenset({"guest"})
    #: MQTT over TCP on this port (0: any free port), beside the AMQP listeners; None: off
    mqtt_port: int | None = None
    #: MQTT over TLS (RabbitMQ's 8883) on this port, with ``tls``, for the default listeners
    mqtt_tls_port: int | None = None
    #: MQTT and AMQP over WebSocket on this port (0: any free port; RabbitMQ's Web-MQTT uses
    #: 15675), beside the other listeners; None: off
    ws_port: int | None = None
    #: the WebSocket endpoint's path (RabbitMQ's Web-MQTT: /ws)
    ws_path: str = "/ws"
    #: largest MQTT packet accepted from a logged-in client (RabbitMQ's mqtt.max_packet_size)
    mqtt_max_packet_size: int = 256 * 1024 * 1024
    #: the vhost of MQTT clients whose user name has no "vhost:" prefix
    mqtt_vhost: str = "/"
    #: an MQTT client that sends no user name logs in as this user (RabbitMQ's
    #: mqtt.allow_anonymous, mqtt.default_user, mqtt.default_pass); refused if not allowed
    mqtt_allow_anonymous: bool = True
    mqtt_default_user: str = "guest"
    mqtt_default_password: str = "guest"
    #: an MQTT client over TLS that sends no user name logs in by its verified client
    #: certificate (RabbitMQ's mqtt.ssl_cert_login), as the user ``ssl_cert_login_from`` names
    mqtt_ssl_cert_login: bool = False
    #: SASL mechanisms AMQP clients may use (RabbitMQ's auth_mechanisms); EXTERNAL (log in by
    #: client certificate) is offered only on TLS listeners that verify client certificates
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "AMQPLAIN")
    #: the user name a client certificate stands for (RabbitMQ's ssl_cert_login_from):
    #: "distinguished_name" (``CN=app,O=Acme``) or "common_name" (``app``)
    ssl_cert_login_from: str = "distinguished_name"
    #: seconds a refused address's next login waits once it failed twice (doubling after)
    login_failure_delay: float = 0.25
    #: the longest such wait
    login_failure_max_delay: float = 5.0

    def effective_listeners(self) -> list[ListenerSpec]:
        if self.listeners is not None:
            return self.listeners
        listeners = [ListenerSpec("tcp", "amqp", self.host, self.amqp_port)]
        if self.tls_port is not None:
            if self.tls is None:
                raise ConfigError("a TLS port needs a certificate and key (tls options)")
            listeners.append(ListenerSpec("tcp", "amqp", self.host, self.tls_port, tls=self.tls))
        if self.mqtt_port is not None:
            listeners.append(ListenerSpec("tcp", "mqtt", self.host, self.mqtt_port))
        if self.mqtt_tls_port is not None:
            if self.tls is None:
                raise ConfigError("an MQTT TLS port needs a certificate and key (tls options)")
            listeners.append(
                ListenerSpec("tcp", "mqtt", self.host, self.mqtt_tls_port, tls=self.tls)
            )
        if self.ws_port is not None:
            listeners.append(self.websocket_listener(self.host))
        return listeners

    def websocket_listener(self, host: str) -> ListenerSpec:
        """The ``--ws-port`` listener: every protocol that has a WebSocket subprotocol."""
        assert self.ws_port is not None
        return ListenerSpec("websocket", "mqtt", host, self.ws_port, options={"path": self.ws_path})


def _loop_delay(seconds: float) -> float:
    """``seconds`` rounded up to a whole millisecond, less a microsecond.

    uvloop's clock ticks in milliseconds: a cancel scope whose deadline falls between two ticks
    wakes at the first, finds its deadline not reached and re-arms itself for "now", in a busy
    loop until the next tick (measured: up to a millisecond of CPU per timer wake, most of the
    broker's CPU with a thousand wakes a second). A deadline just below a tick wakes once. Due
    timers are then at most a millisecond late, never early (``Timers`` checks the time).
    """
    if seconds <= 0:
        return 0.0
    return math.ceil(seconds * 1000) / 1000 - 1e-6


@dataclass
class ListenerInfo:
    spec: ListenerSpec
    host: str
    port: int


class Broker:
    """One broker process: load plugins, hold vhosts, run listeners until cancelled."""

    def __init__(self, settings: Settings | None = None, plugins: Iterable[Any] = ()) -> None:
        self.settings = settings or Settings()
        preloaded, self.settings.loaded_plugins = self.settings.loaded_plugins, None
        if preloaded is not None and not plugins:
            self.plugins: Plugins = preloaded
        else:
            self.plugins = load_plugins(self.settings.blocked_plugins, tuple(plugins))
        registries = self.plugins.registries
        self.exchange_types: Registry[type[ExchangeType]] = registries["exchange_types"]
        self.dispatch_policies: Registry[type[DispatchPolicy]] = registries["dispatch_policies"]
        self.queue_types: Registry[type[Queue]] = registries["queue_types"]
        self.stores: Registry[type[Store]] = registries["stores"]
        self.protocols: Registry[type[Protocol]] = registries["protocols"]
        self.transports: Registry[type[Transport]] = registries["transports"]
        self.auth_backends: Registry[type[AuthBackend]] = registries["auth_backends"]
        if self.settings.default_dispatch not in self.dispatch_policies:
            raise PluginError(
                f"default dispatch policy '{self.settings.default_dispatch}' is not registered "
                f"(known: {', '.join(self.dispatch_policies.names()) or 'none'})"
                + self.plugins.failure_note()
            )
        self.config_sections: Registry[Any] = registries["config_sections"]
        failed = {failure.name for failure in self.plugins.failed}
        unknown = sorted(set(self.settings.plugin_config) - set(self.config_sections) - failed)
        if unknown:
            raise PluginError(
                f"no loaded plugin has a config section '{unknown[0]}' "
                f"(sections: {', '.join(sorted(self.config_sections)) or 'none'})"
                + self.plugins.failure_note()
            )
        store_class = self.stores.get(self.settings.store)
        if store_class is None:
            raise PluginError(
                f"store '{self.settings.store}' is not registered" + self.plugins.failure_note()
            )
        self.store: Store = store_class(self.settings.data_dir)
        #: where queues page messages out past their memory budget
        self.paging = PagingSpace(self.store.disk_directory())
        #: the data directory's access file (users, vhosts, permissions), if there is one
        self.access_file = (
            AccessFile.in_data_dir(self.settings.data_dir) if self.settings.data_dir else None
        )
        #: users and permissions imported from definitions files (``import_access``)
        self.imported_access = Access()
        self.users = UserDatabase(self._effective_access(), self.settings.loopback_users)
        self.logins = Logins(self)
        #: the broker's one timer service (message TTL, x-expires)
        self.timers = Timers()
        #: bytes held above which publishers are blocked (None: no alarm); checked often
        self._memory_limit = self.settings.memory_limit or default_limit(
            self.settings.memory_high_watermark
        )
        self.vhosts: dict[str, VirtualHost] = {}
        self._add_vhosts()
        self.connections: set[ProtocolConnection] = set()
        #: bytes that plugins hold outside queues (messages an exchange keeps for later, say),
        #: each a callable the memory alarm adds up; a plugin appends and removes its own
        self.memory_sources: list[Callable[[], int]] = []
        #: open connections per vhost and user, checked against the limits
        self.limits = LimitTracker(self.settings.vhost_limits, self.settings.user_limits)
        self.listeners: list[ListenerInfo] = []
        #: the resource alarms in force ("memory", "disk"): publishers are blocked while any is
        self.alarms: set[str] = set()
        #: watches the disk store's free space while the broker serves (None: no disk alarm)
        self.disk_monitor: DiskMonitor | None = None
        self._protocol_instances: dict[str, Protocol] = {}
        #: sections of imported definitions that no handler took (users, permissions...), as
        #: data; ``definitions.export`` writes them back
        self.definition_extras: dict[str, list[dict[str, Any]]] = {}

    # -- services for protocol engines ----------------------------------------------------

    def authenticate(self, username: str, password: str, peer_host: str | None) -> User | None:
        """The synchronous check (blocks for the password hash); engines use ``login``."""
        self.refresh_access()
        user = self.users.authenticate(username, password, peer_host)
        if user is not None:
            return user
        for _, backend_class in self.auth_backends.items():
            user = backend_class().authenticate(username, password, peer_host)  # type: ignore[call-arg]
            if user is not None:
                return user
        return None

    def login(
        self,
        username: str,
        password: str | None,
        peer_host: str | None,
        done: Callable[[LoginResult], None],
    ) -> None:
        """Check a login off the event loop, slowing down addresses that failed; ``done``
        gets the ``User`` or a ``LoginRefused`` with the reason (see ``auth.Logins``)."""
        self.logins.login(username, password, peer_host, done)

    @property
    def access(self) -> Access:
        """Users, vhosts and permissions in force."""
        return self.users.access

    # -- access (users, vhosts, permissions) ------------------------------------------------

    def _effective_access(self) -> Access:
        """The access file's model (or the default: guest on ``/``, unless the config or an
        imported definitions file names users), with the users and permissions imported from
        definitions files over it, and the config's over those."""
        configured = self.settings.access
        base = self.access_file.load() if self.access_file is not None else None
        if base is None:
            named = self.imported_access.users or (configured is not None and configured.users)
            base = Access() if named else Access.default()
        base = base.merged(self.imported_access)
        return base if configured is None else base.merged(configured)

    def import_access(self, access: Access) -> None:
        """Add ``access`` (users, vhosts, permissions of a definitions file) to the model in
        force. It stays over the access file when that is reloaded; the config stays over it."""
        self.imported_access = self.imported_access.merged(access)
        previous = list(self.access.vhosts)
        self.users.access = self._effective_access()
        self._add_vhosts(previous)

    def change_access(self, change: Callable[[Access], None]) -> None:
        """Apply ``change`` to the users, vhosts and permissions, and put it in force: in the
        access file when there is a data directory (as the ``warrenmq user`` commands do), so
        that it lasts; otherwise for this run only. ``change`` raises ``AccessError`` to
        refuse, and nothing changes."""
        previous = list(self.access.vhosts)
        if self.access_file is not None:
            access = self.access_file.load_or_default()
            change(access)
            self.access_file.save(access)
            self.users.access = self._effective_access()
        else:
            access = self.access.copy()
            change(access)
            # kept as the imported model, which then names every user: a later import of
            # definitions starts from it, not from the default guest
            self.imported_access = access.copy()
            self.users.access = access
        self._add_vhosts(previous)

    def refresh_access(self) -> bool:
        """Reload the access file if it changed since it was read (a stat: cheap enough for
        every login). A file that cannot be read is logged and the old model kept."""
        if self.access_file is None or not self.access_file.changed():
            return False
        try:
            access = self._effective_access()
        except (ConfigError, OSError) as exc:
            log.error("keeping the previous users and permissions: %s", exc)
            return False
        previous = list(self.access.vhosts)
        self.users.access = access
        log.info("reloaded users and permissions from %s", self.access_file.path)
        self._add_vhosts(previous)
        return True

    def _add_vhosts(self, previous: Iterable[str] = ()) -> None:
        """A ``VirtualHost`` for each configured or access-defined vhost; those of the
        ``previous`` access model that are gone from it (and not configured) are deleted, and
        their connections closed. Vhosts made some other way are left alone."""
        wanted = dict.fromkeys((*self.settings.vhosts, *self.access.vhosts))
        for name in wanted:
            if name not in self.vhosts:
                self.vhosts[name] = VirtualHost(self, name)
        for name in [name for name in previous if name not in wanted and name in self.vhosts]:
            vhost = self.vhosts.pop(name)
            for connection in [c for c in self.connections if getattr(c, "vhost", None) is vhost]:
                connection.shutdown(f"vhost '{name}' is deleted")
            for queue in list(vhost.queues.values()):
                vhost.remove_queue(queue)
            log.info("vhost '%s' was deleted", name)

    def protocol(self, name: str) -> Protocol:
        instance = self._protocol_instances.get(name)
        if instance is None:
            protocol_class = self.protocols.get(name)
            if protocol_class is None:
                raise PluginError(
                    f"protocol '{name}' is not registered" + self.plugins.failure_note()
                )
            instance = self._protocol_instances[name] = protocol_class()
        return instance

    def plugin_config(self, name: str) -> dict[str, Any]:
        """The values of the config section ``name`` (``[plugins.NAME]``), defaults filled in."""
        section = self.config_sections.get(name)
        values = dict(section.defaults()) if section is not None else {}
        values.update(self.settings.plugin_config.get(name, {}))
        return values

    # -- virtual hosts and policies --------------------------------------------------------

    def add_vhost(self, name: str) -> VirtualHost:
        """The virtual host ``name``, made if it does not exist yet."""
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VirtualHost(self, name)
        return vhost

    def set_policy(self, policy: Policy) -> None:
        """Add or replace ``policy`` in its virtual host; it applies to existing queues and
        exchanges at once (``PolicyError`` if the virtual host does not exist)."""
        vhost = self.vhosts.get(policy.vhost)
        if vhost is None:
            raise PolicyError(f"no vhost '{policy.vhost}'")
        vhost.set_policy(policy)
        for key in policy.ignored_keys():
            log.warning("policy '%s': '%s' has no effect in warrenmq", policy.name, key)

    def clear_policy(self, vhost: str, name: str) -> bool:
        """Remove a policy; False if there was none."""
        host = self.vhosts.get(vhost)
        return host is not None and host.clear_policy(name)

    def policies(self) -> list[Policy]:
        """Every policy, by virtual host then name."""
        return [
            policy
            for host in sorted(self.vhosts)
            for _, policy in sorted(self.vhosts[host].policies.items())
        ]

    # -- views -------------------------------------------------------------------------

    def connection_views(self) -> list[ConnectionView]:
        views = (connection.view() for connection in list(self.connections))
        return [view for view in views if view is not None]

    # -- lifetime -------------------------------------------------------------------------

    async def _call_lifecycle_hook(self, hook_name: str) -> None:
        """Call every plugin's ``hook_name``, then await what they returned, in turn.

        An optional plugin that raises is logged by name and skipped from then on; an
        essential one (or one passed in code) stops start-up. At shutdown every plugin is
        called whatever the others did.
        """
        hook = getattr(self.plugins.manager.hook, hook_name)
        pending = []
        for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
            try:
                arguments = {"broker": self}
                result = impl.function(*(arguments[name] for name in impl.argnames))
                pending.append((impl.plugin_name, result))
            except Exception as exc:
                self._lifecycle_failed(hook_name, impl.plugin_name, exc)
        for plugin_name, result in pending:
            if inspect.isawaitable(result):
                try:
                    await result
                except Exception as exc:
                    self._lifecycle_failed(hook_name, plugin_name, exc)

    def _start_services(self, group: TaskGroup) -> None:
        """Call every plugin's ``warrenmq_start_services`` with its own ``Services``. A plugin
        whose hook raises is treated as one that failed in ``warrenmq_startup``, but an
        ``OSError`` (a port in use) stops start-up as a listener's does."""
        hook = self.plugins.manager.hook.warrenmq_start_services
        for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
            arguments = {"broker": self, "services": Services(group, impl.plugin_name)}
            try:
                impl.function(*(arguments[name] for name in impl.argnames))
            except OSError:
                raise  # a service that cannot listen stops start-up, as a listener does
            except Exception as exc:
                self._lifecycle_failed("warrenmq_startup", impl.plugin_name, exc)

    def _lifecycle_failed(self, hook_name: str, plugin_name: str, exc: Exception) -> None:
        reason = f"failed in {hook_name}: {type(exc).__name__}: {exc}"
        if hook_name == "warrenmq_startup" and plugin_name in self.plugins.strict:
            raise exc
        if hook_name == "warrenmq_startup":
            self.plugins.fail(plugin_name, reason)
        else:
            log.error("plugin %r %s", plugin_name, reason)

    @property
    def memory_alarm(self) -> bool:
        """True while accounted memory is over the limit (publishers are blocked)."""
        return "memory" in self.alarms

    @property
    def disk_alarm(self) -> bool:
        """True while free disk space is under the limit (publishers are blocked)."""
        return "disk" in self.alarms

    def set_alarm(self, resource: str, active: bool) -> None:
        """Raise or clear the alarm of ``resource`` ("memory", "disk") and tell every
        connection the alarms in force: publishers stay blocked until all have cleared."""
        if active == (resource in self.alarms):
            return
        if active:
            self.alarms.add(resource)
        else:
            self.alarms.discard(resource)
        alarms = frozenset(self.alarms)
        for connection in list(self.connections):
            connection.resource_alarm(alarms)

    def set_memory_alarm(self, active: bool) -> None:
        self.set_alarm("memory", active)

    def accounted_memory(self) -> int:
        """Bytes the broker knows it holds: messages in queues (ready and unacknowledged,
        with a per-message overhead), each connection's buffers and partial content, and what
        plugins report through ``memory_sources``."""
        total = sum(source() for source in self.memory_sources)
        for vhost in self.vhosts.values():
            for queue in vhost.queues.values():  # paged-out messages are on disk
                total += (
                    queue.ready_bytes
                    - queue.paged_bytes
                    + queue.unacked_bytes
                    + MESSAGE_OVERHEAD
                    * (queue.ready_count - queue.paged_count + queue.unacked_count)
                )
        for connection in list(self.connections):
            total += connection.buffered_bytes()
        return total

    def memory_limit(self) -> int | None:
        return self._memory_limit

    def check_memory(self) -> None:
        """Raise or clear the memory alarm.

        The alarm goes by accounted memory; resident memory is a second guard for what the
        accounting misses, and only while accounted memory is substantial too, because
        CPython rarely returns freed memory to the system (a drained broker stays large).
        """
        limit = self.memory_limit()
        if not limit:
            return
        accounted = self.accounted_memory()
        resident = self.settings.memory_gauge() or 0
        resident_high = resident >= RESIDENT_GUARD * limit
        if not self.memory_alarm:
            if accounted >= limit or (resident_high and accounted >= limit / 2):
                log.warning(
                    "memory alarm: %.0f MiB held (%.0f MiB resident), limit %.0f MiB; "
                    "blocking publishers",
                    accounted / 2**20,
                    resident / 2**20,
                    limit / 2**20,
                )
                self.set_memory_alarm(True)
        elif accounted < 0.9 * limit and not (resident_high and accounted >= 0.45 * limit):
            log.warning(
                "memory alarm cleared: %.0f MiB held (%.0f MiB resident)",
                accounted / 2**20,
                resident / 2**20,
            )
            self.set_memory_alarm(False)

    async def _watch_memory(self) -> None:
        limit = self.memory_limit()
        if not limit:
            return
        log.info("memory alarm at %.0f MiB held by messages and buffers", limit / 2**20)
        while True:
            self.check_memory()
            await anyio.sleep(self.settings.memory_check_interval)

    def _disk_monitor(self) -> DiskMonitor | None:
        """The disk alarm's monitor if the store writes to a local directory
        and a limit is set; None otherwise."""
        directory = self.store.disk_directory()
        settings = self.settings
        limit = limit_bytes(settings.disk_free_limit, settings.disk_free_limit_relative)
        if directory is None or limit is None:
            return None
        monitor = DiskMonitor(
            directory,
            limit,
            settings.disk_free_gauge,
            settings.disk_check_interval,
            lambda active: self.set_alarm("disk", active),
        )
        log.info("disk alarm below %s free on the filesystem of %s", format_size(limit), directory)
        return monitor

    def page_queues(self) -> None:
        """Let every queue over its memory budget, or with messages on disk, page."""
        for vhost in list(self.vhosts.values()):
            for queue in list(vhost.queues.values()):
                paged = queue.paged_count
                if (
                    paged
                    or queue.ready_count - paged > queue.in_memory_length
                    or queue.ready_bytes - queue.paged_bytes > queue.in_memory_bytes
                ):
                    try:
                        queue.page()
                    except Exception:
                        log.exception("paging of queue '%s' failed", queue.name)

    async def _page_queues(self) -> None:
        while True:
            await anyio.sleep(self.settings.paging_interval)
            self.page_queues()

    async def _watch_disk(self, monitor: DiskMonitor) -> None:
        while True:
            await anyio.sleep(monitor.interval)
            monitor.check()

    async def _run_timers(self) -> None:
        """Run due timers; sleep until the next deadline or until an earlier one is added."""
        timers = self.timers
        wake = anyio.Event()

        def earlier() -> None:
            wake.set()

        timers.on_earlier = earlier
        try:
            while True:
                deadline = timers.run_due()
                if wake.is_set():
                    wake = anyio.Event()
                    continue
                delay = None if deadline is None else _loop_delay(deadline - time.monotonic())
                with anyio.move_on_after(delay):
                    await wake.wait()
                wake = anyio.Event()
        finally:
            timers.on_earlier = None

    def _restore(self) -> None:
        """Declare again the durable exchanges, queues (with their messages) and bindings the
        store kept. One that cannot be restored (a plugin gone, say) is skipped with a warning."""
        store = self.store
        definitions = store.load_definitions()
        queues = messages = 0
        store.loading = True
        try:
            for x in definitions.exchanges:
                vhost = self._restore_vhost(x.vhost, "exchange", x.name)
                if vhost is None:
                    continue
                try:
                    vhost.declare_exchange(
                        x.name, x.type, durable=True, auto_delete=x.auto_delete,
                        internal=x.internal, arguments=x.arguments,
                    )  # fmt: skip
                except BrokerError as exc:
                    log.warning(
                        "exchange '%s' in vhost '%s' not restored: %s", x.name, x.vhost, exc
                    )
            for q in definitions.queues:
                vhost = self._restore_vhost(q.vhost, "queue", q.name)
                if vhost is None:
                    continue
                try:
                    queue = vhost.declare_queue(
                        q.name, durable=True, auto_delete=q.auto_delete, arguments=q.arguments
                    )
                except BrokerError as exc:
                    log.warning("queue '%s' in vhost '%s' not restored: %s", q.name, q.vhost, exc)
                    continue
                queues += 1
                messages += queue.ready_count
            for b in definitions.bindings:
                vhost = self.vhosts.get(b.vhost)
                if vhost is None:
                    continue
                found = vhost.queues if b.destination_kind == "queue" else vhost.exchanges
                destination = found.get(b.destination)
                try:
                    if destination is None:
                        raise BrokerError(f"no {b.destination_kind} '{b.destination}'")
                    vhost.bind(destination, b.source, b.routing_key, b.arguments)
                except BrokerError as exc:
                    log.warning(
                        "binding '%s' -> %s '%s' in vhost '%s' not restored: %s",
                        b.source, b.destination_kind, b.destination, b.vhost, exc,
                    )  # fmt: skip
        finally:
            store.loading = False
        store.recovery_done(queues, messages)
        exchanges = [x for x in definitions.exchanges if x.vhost in self.vhosts]
        if exchanges or definitions.bindings:
            log.info(
                "restored %d durable exchanges and %d bindings",
                len(exchanges),
                len(definitions.bindings),
            )

    def _log_start(self) -> None:
        """Say what this broker runs with: plugins, store, users and vhosts."""
        plugins = sorted({row[2] for row in self.plugins.registered()})
        log.info("plugins: %s", ", ".join(plugins) or "none")
        if self.store.disk_directory() is None:
            log.info("store '%s': nothing is kept across restarts", self.settings.store)
        access = self.access
        source = (
            f" (from {self.access_file.path})"
            if self.access_file and self.access_file.stamp()
            else ""
        )
        log.info(
            "%d %s, vhosts: %s%s",
            len(access.users),
            "user" if len(access.users) == 1 else "users",
            ", ".join(sorted(self.vhosts)),
            source,
        )

    def _restore_vhost(self, name: str, kind: str, what: str) -> VirtualHost | None:
        vhost = self.vhosts.get(name)
        if vhost is None:
            log.warning("%s '%s' kept for unknown vhost '%s' not restored", kind, what, name)
        return vhost

    async def serve(
        self, *, task_status: TaskStatus[list[ListenerInfo]] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, restore what it kept, start every listener, and run until
        cancelled."""
        await self.store.open()
        try:
            self.paging.clear()
            self.disk_monitor = self._disk_monitor()
            if self.disk_monitor is not None:
                self.disk_monitor.check()  # publishers are blocked from the first connection
            self._restore()
            self._log_start()
            for definitions in self.settings.definitions:
                apply_definitions(self, definitions)
                log.info("imported definitions from %s", definitions.source)
            await self._call_lifecycle_hook("warrenmq_startup")
            async with anyio.create_task_group() as group:
                group.start_soon(self.store.run)
                for spec in self.settings.effective_listeners():
                    transport_class = self.transports.get(spec.transport)
                    if transport_class is None:
                        raise PluginError(
                            f"transport '{spec.transport}' is not registered"
                            + self.plugins.failure_note()
                        )
                    self.protocol(spec.protocol)  # fail early on an unknown protocol
                    host, port = await group.start(transport_class().serve, self, spec)
                    self.listeners.append(ListenerInfo(spec, host, port))
                    log.info(
                        "listening for %s on %s %s:%d%s",
                        spec.protocol,
                        spec.transport,
                        host,
                        port,
                        " with TLS" if spec.tls is not None else "",
                    )
                group.start_soon(self._watch_memory)
                if self.disk_monitor is not None:
                    group.start_soon(self._watch_disk, self.disk_monitor)
                group.start_soon(self._run_timers)
                group.start_soon(self._page_queues)
                self._start_services(group)
                task_status.started(self.listeners)
        finally:
            with anyio.CancelScope(shield=True):
                await self._call_lifecycle_hook("warrenmq_shutdown")
                await self.store.close()
                await anyio.to_thread.run_sync(self.paging.close)
                log.info("broker stopped")
