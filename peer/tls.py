"""TLS for the public API and the peer streams: the `[tls]` table and its SSL contexts.

    [tls]
    ca = "certs/ca.pem"              # the CA that signed every peer's certificate
    cert = "certs/node-{id}.pem"     # this peer's certificate; {id} is its id
    key = "certs/node-{id}.key"
    mutual = true                    # peers prove themselves to each other with theirs

With `[tls]`, every peer serves HTTPS on its port (the URLs of `[[node]]` become
`https://`). Peers verify each other's certificates against `ca` (host names or IP
addresses in the certificates' subject alternative names). With `mutual`, a peer also
presents its own certificate when it connects, and the signed `/peer/...` routes refuse
a connection without one; the public API still takes clients without certificates
(they authenticate with tokens). `python -m peer certs` makes a local CA and a
certificate per peer for a quick start. Paths are relative to `cluster.toml`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TLS_FIELDS = frozenset({"ca", "cert", "key", "mutual"})


class TlsConfigError(ValueError):
    """A field of the `[tls]` table is invalid."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca: str
    cert: str
    key: str
    mutual: bool = True

    def cert_of(self, node_id: int) -> str:
        return self.cert.replace("{id}", str(node_id))

    def key_of(self, node_id: int) -> str:
        return self.key.replace("{id}", str(node_id))

    def server_context(self, node_id: int) -> ssl.SSLContext:
        """The context peer `node_id` serves with: its certificate, and with `mutual`
        the CA it checks a connecting peer's certificate against (optional at the
        handshake: API clients have none)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_of(node_id), self.key_of(node_id))
        if self.mutual:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self, node_id: int | None = None) -> ssl.SSLContext:
        """The context a peer (`node_id`: presenting its certificate when `mutual`) or
        a tool (None) connects to peers with."""
        context = ssl.create_default_context(cafile=self.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if node_id is not None and self.mutual:
            context.load_cert_chain(self.cert_of(node_id), self.key_of(node_id))
        return context


def _path(where: str, value: Any, base_dir: Path | None) -> str:
    if not isinstance(value, str) or not value:
        raise TlsConfigError(f"{where}: must be a file path")
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def parse_tls(table: Any, base_dir: Path | None = None) -> TlsConfig:
    if not isinstance(table, dict):
        raise TlsConfigError("tls: must be a table")
    unknown = sorted(set(table) - TLS_FIELDS)
    if unknown:
        raise TlsConfigError(f"tls.{unknown[0]}: unknown setting")
    missing = sorted({"ca", "cert", "key"} - set(table))
    if missing:
        raise TlsConfigError(f"tls.{missing[0]}: is required")
    mutual = table.get("mutual", True)
    if not isinstance(mutual, bool):
        raise TlsConfigError("tls.mutual: must be true or false")
    paths = {k: _path(f"tls.{k}", table[k], base_dir) for k in ("ca", "cert", "key")}
    return TlsConfig(mutual=mutual, **paths)


def dump_tls(tls: TlsConfig | None) -> list[str]:
    """TOML lines of `tls` (absolute paths), empty without TLS."""
    if tls is None:
        return []
    lines = ["", "[tls]"]
    for key in ("ca", "cert", "key"):
        escaped = getattr(tls, key).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key} = "{escaped}"')
    return [*lines, f"mutual = {str(tls.mutual).lower()}"]
