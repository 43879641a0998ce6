"""Cluster configuration: reading, validating and writing `cluster.toml`.

Owns the `ClusterConfig` / `NodeAddress` types and nothing else: no sockets, no clock.
A bad file raises `ConfigError` naming the field and the reason.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from peer.protocol.settings import POLICIES, QueuePolicy, Settings
from peer.tls import TlsConfig, TlsConfigError, dump_tls, parse_tls
from peer.tokens import AuthConfig, AuthConfigError, dump_auth, parse_auth

_DEFAULTS = Settings()


class ConfigError(ValueError):
    """The configuration file is unreadable or a field is invalid."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    id: int
    host: str
    port: int
    scheme: str = "http"  # https when the cluster has [tls]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[NodeAddress, ...]
    data_dir: str = "data"
    heartbeat_interval: float = _DEFAULTS.heartbeat_interval
    suspect_after: float = _DEFAULTS.suspect_after
    failure_timeout: float = _DEFAULTS.failure_timeout
    election_timeout: float = _DEFAULTS.election_timeout
    slots: int = _DEFAULTS.slots
    fanout: int = _DEFAULTS.fanout  # gossip targets per round beyond 9 peers
    prefetch: int = _DEFAULTS.prefetch
    prefetch_below: float = _DEFAULTS.prefetch_below
    policy: str = _DEFAULTS.policy
    task_modules: tuple[str, ...] = field(default_factory=tuple)
    allow_shell: bool = False
    secret: str = ""
    max_body: int = 1 << 20
    max_connections_per_client: int = 64  # open connections one remote address may hold
    header_timeout: float = 5.0  # seconds a request head may take to arrive (slow-loris)
    body_timeout: float = 10.0  # seconds a request body may take to arrive
    submit_wait: float = 2.0
    retry_base: float = _DEFAULTS.retry_base
    retry_max: float = _DEFAULTS.retry_max
    max_catch_up: int = _DEFAULTS.max_catch_up
    priority_aging: float = _DEFAULTS.priority_aging
    keep_finished: float | None = _DEFAULTS.keep_finished  # retention (peer/protocol/retention.py)
    keep_trimmed: float | None = _DEFAULTS.keep_trimmed
    max_finished: int | None = _DEFAULTS.max_finished
    keep_keys: float = _DEFAULTS.keep_keys
    snapshot_every: int = _DEFAULTS.snapshot_every  # entries (peer/protocol/snapshot.py)
    snapshot_bytes: int = _DEFAULTS.snapshot_bytes
    snapshot_task_chars: int = _DEFAULTS.snapshot_task_chars
    snapshot_keep: int = _DEFAULTS.snapshot_keep
    snapshot_chunk: int = _DEFAULTS.snapshot_chunk
    queues: tuple[tuple[str, QueuePolicy], ...] = ()  # [queues.NAME] tables
    schedules: tuple[dict[str, Any], ...] = ()  # [[schedule]] tables, checked at serve
    log_format: str = "auto"  # console | json | auto (console on a terminal)
    auth: AuthConfig = AuthConfig()  # [auth]: API tokens (peer/tokens.py)
    tls: TlsConfig | None = None  # [tls]: HTTPS and mutual TLS (peer/tls.py)

    def settings(self) -> Settings:
        """The core's settings: every field of `Settings` this file sets, else its
        default."""
        names = [f.name for f in fields(Settings) if hasattr(self, f.name)]
        return Settings(**{name: getattr(self, name) for name in names})

    def node(self, node_id: int) -> NodeAddress:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(f"node: no [[node]] with id {node_id}")

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(n.id for n in self.nodes)

    def node_dir(self, node_id: int) -> Path:
        return Path(self.data_dir) / f"node-{node_id}"


MIN_SECRET = 16  # characters of cluster.secret a peer on a non-loopback address needs


def exposure_problem(config: ClusterConfig, node_id: int) -> str | None:
    """Why peer `node_id` must not serve as configured, or None: on a non-loopback
    address, auth off or a short cluster secret (anyone could sign peer messages) needs
    `auth.insecure = true`."""
    host = config.node(node_id).host
    if config.auth.insecure or _is_loopback(host):
        return None
    where = f"node {node_id} would serve {host}, which is not a loopback address,"
    if len(config.secret) < MIN_SECRET:
        return (
            f"{where} with a cluster.secret of under {MIN_SECRET} characters: anyone could "
            "sign peer messages; set the same long random secret on every host (or "
            "auth.insecure = true to serve it anyway)"
        )
    if not config.auth.enabled:
        return (
            f"{where} with no API tokens: add [[auth.token]] tables (see peer/tokens.py), "
            "or set auth.insecure = true to serve it open anyway"
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"cluster.{key}: must be a positive number of seconds")
    return float(value)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"cluster.{key}: must be a positive integer")
    return value


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"cluster.{key}: must be a whole number, 0 or more")
    return value


def _duration(key: str, value: Any) -> float:
    """Seconds, given as a number or as a string with a unit: "90s", "15m", "12h", "7d"."""
    if isinstance(value, str) and value[-1:] in _UNITS:
        try:
            number = float(value[:-1])
        except ValueError:
            number = -1.0
        if number > 0 and number != float("inf"):
            return number * _UNITS[value[-1]]
        raise ConfigError(f"cluster.{key}: must be a duration like 90s, 15m, 12h or 7d")
    if isinstance(value, str):
        raise ConfigError(f"cluster.{key}: must be a duration like 90s, 15m, 12h or 7d")
    return _seconds(key, value)


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"cluster.{key}: must be a string")
    return value


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"cluster.{key}: must be true or false")
    return value


def _module_names(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise ConfigError(f"cluster.{key}: must be a list of module names")
    return tuple(value)


_CHECKS = {
    "heartbeat_interval": _seconds,
    "suspect_after": _seconds,
    "failure_timeout": _seconds,
    "election_timeout": _seconds,
    "submit_wait": _seconds,
    "retry_base": _seconds,
    "retry_max": _seconds,
    "slots": _positive_int,
    "fanout": _positive_int,
    "prefetch": _positive_int,
    "prefetch_below": _seconds,
    "max_body": _positive_int,
    "max_connections_per_client": _positive_int,
    "header_timeout": _seconds,
    "body_timeout": _seconds,
    "max_catch_up": _positive_int,
    "priority_aging": _seconds,
    "keep_finished": _duration,
    "keep_trimmed": _duration,
    "keep_keys": _duration,
    "max_finished": _positive_int,
    "snapshot_every": _count,
    "snapshot_bytes": _count,
    "snapshot_task_chars": _count,
    "snapshot_keep": _count,
    "snapshot_chunk": _positive_int,
    "data_dir": _string,
    "secret": _string,
    "policy": _string,
    "log_format": _string,
    "allow_shell": _boolean,
    "task_modules": _module_names,
}


def _check_cluster_table(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        check = _CHECKS.get(key)
        if check is None:
            raise ConfigError(f"cluster.{key}: unknown setting")
        out[key] = check(key, value)
    if out.get("log_format", "auto") not in ("auto", "console", "json"):
        raise ConfigError("cluster.log_format: must be auto, console or json")
    if out.get("policy", "fifo") not in POLICIES:
        raise ConfigError(f"cluster.policy: must be one of {', '.join(POLICIES)}")
    return out


def _check_nodes(raw: Any) -> tuple[NodeAddress, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("node: at least one [[node]] table is required")
    nodes: list[NodeAddress] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) - {"id", "host", "port"}:
            raise ConfigError(f"node[{i}]: only id, host and port are allowed")
        node_id, host, port = entry.get("id"), entry.get("host", "127.0.0.1"), entry.get("port")
        if isinstance(node_id, bool) or not isinstance(node_id, int) or node_id <= 0:
            raise ConfigError(f"node[{i}].id: must be a positive integer")
        if not isinstance(host, str) or not host:
            raise ConfigError(f"node[{i}].host: must be a host name or address")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"node[{i}].port: must be a port number")
        nodes.append(NodeAddress(node_id, host, port))
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ConfigError("node: ids must be unique")
    return tuple(sorted(nodes, key=lambda n: n.id))


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: must be a positive number")
    return float(value)


def _check_queue_tables(raw: Any) -> tuple[tuple[str, QueuePolicy], ...]:
    """`[queues.NAME]` tables: weight, max_running, rate, burst."""
    if not isinstance(raw, dict):
        raise ConfigError("queues: must be [queues.NAME] tables")
    out = []
    for name, table in sorted(raw.items()):
        where = f"queues.{name}"
        if not isinstance(table, dict) or set(table) - {"weight", "max_running", "rate", "burst"}:
            raise ConfigError(f"{where}: only weight, max_running, rate and burst are allowed")
        numbers = {k: _positive(f"{where}.{k}", v) for k, v in table.items() if k != "max_running"}
        cap = table.get("max_running")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
            raise ConfigError(f"{where}.max_running: must be a positive integer")
        out.append((name, QueuePolicy(max_running=cap, **numbers)))
    return tuple(out)


def _check_schedule_tables(raw: Any) -> tuple[dict[str, Any], ...]:
    """The `[[schedule]]` tables as given; their fields are checked like a `POST
    /schedules` body when a peer starts (`peer.runtime.validation.declared_schedules`),
    where the task kinds are known."""
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise ConfigError("schedule: must be [[schedule]] tables")
    names = [entry.get("name") for entry in raw]
    if len(set(map(str, names))) != len(names):
        raise ConfigError("schedule: names must be unique")
    return tuple(raw)


def _check_auth(table: Any, base_dir: Path | None) -> AuthConfig:
    try:
        return parse_auth(table, base_dir)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None


def _check_tls(table: Any, base_dir: Path | None) -> TlsConfig | None:
    if table is None:
        return None
    try:
        return parse_tls(table, base_dir)
    except TlsConfigError as exc:
        raise ConfigError(str(exc)) from None


def parse_config(data: dict[str, Any], base_dir: Path | None = None) -> ClusterConfig:
    """Build a validated config from an already-parsed TOML document (`base_dir`: where
    relative paths inside it, such as `auth.tokens_file`, are read from)."""
    unknown = set(data) - {"cluster", "node", "schedule", "queues", "auth", "tls"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown table")
    table = data.get("cluster", {})
    if not isinstance(table, dict):
        raise ConfigError("cluster: must be a table")
    tls = _check_tls(data.get("tls"), base_dir)
    nodes = _check_nodes(data.get("node"))
    if tls is not None:
        nodes = tuple(replace(n, scheme="https") for n in nodes)
    config = ClusterConfig(
        nodes=nodes,
        tls=tls,
        schedules=_check_schedule_tables(data.get("schedule", [])),
        queues=_check_queue_tables(data.get("queues", {})),
        auth=_check_auth(data.get("auth", {}), base_dir),
        **_check_cluster_table(table),
    )
    if not config.heartbeat_interval < config.suspect_after <= config.failure_timeout:
        raise ConfigError(
            "cluster.failure_timeout: need heartbeat_interval < suspect_after <= failure_timeout"
        )
    return config


def load_config(path: str | Path) -> ClusterConfig:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    return parse_config(data, Path(path).parent)


def with_nodes(config: ClusterConfig, count: int, base_port: int | None = None) -> ClusterConfig:
    """Nodes 1..count: those of the file, extended on following ports when count exceeds it.

    With `base_port`, node i listens on base_port + i - 1.
    """
    known = {n.id: n for n in config.nodes}
    last = config.nodes[-1]
    nodes = []
    for node_id in range(1, count + 1):
        base = known.get(node_id, replace(last, id=node_id, port=last.port + node_id - last.id))
        port = base.port if base_port is None else base_port + node_id - 1
        nodes.append(replace(base, id=node_id, port=port))
    return replace(config, nodes=tuple(nodes))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; TOML has no null: None is left out
        pairs = [
            f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None
        ]
        return "{ " + ", ".join(pairs) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_config(config: ClusterConfig) -> str:
    """The TOML text of `config`; `load_config` of it gives the same config back."""
    lines = ["[cluster]"]
    for name in ClusterConfig.__dataclass_fields__:
        if name not in ("nodes", "schedules", "queues", "auth", "tls"):
            if getattr(config, name) is None:
                continue  # (unset: TOML has no null)
            lines.append(f"{name} = {_toml_value(getattr(config, name))}")
    for node in config.nodes:
        lines += ["", "[[node]]", f"id = {node.id}", f'host = "{node.host}"', f"port = {node.port}"]
    for name, policy in config.queues:
        lines += ["", f"[queues.{_toml_value(name)}]"]
        for key in ("weight", "max_running", "rate", "burst"):
            if getattr(policy, key) is not None:
                lines.append(f"{key} = {_toml_value(getattr(policy, key))}")
    for schedule in config.schedules:
        lines += ["", "[[schedule]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in schedule.items() if v is not None]
    lines += dump_auth(config.auth) + dump_tls(config.tls)
    return "\n".join(lines) + "\n"
