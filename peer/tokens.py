"""API tokens and roles: the `[auth]` table of `cluster.toml`, and who holds which role.

A token is a named secret with one role. Roles are ordered, each including the ones
before it: `read` (GET endpoints, the web page's data, `/metrics` unless
`metrics_public`), `write` (submit, cancel, retry, requeue, schedules), `admin` (drain,
`shell` tasks). The configuration keeps a token as its SHA-256 digest (`sha256 = "..."`)
or, for convenience, in clear (`token = "..."`); only digests are written back out.

    [auth]
    metrics_public = false       # /metrics without a token
    insecure = false             # serve a non-loopback address with auth off
    tokens_file = "tokens.toml"  # more [[token]] tables, relative to cluster.toml

    [[auth.token]]
    name = "ci"
    role = "write"
    sha256 = "<hex digest of the token>"

No sockets or clocks here: `identify` is a pure function of the table and the
presented secret, and compares against every digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("read", "write", "admin")
TOKEN_FIELDS = frozenset({"name", "role", "token", "sha256"})
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")
AUTH_FIELDS = frozenset({"metrics_public", "insecure", "tokens_file", "token"})


class AuthConfigError(ValueError):
    """A field of the `[auth]` table (or its tokens file) is invalid."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def allows(role: str, needed: str) -> bool:
    """Whether a token of `role` may do what needs `needed`."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: str
    sha256: str  # hex digest of the secret

    def __repr__(self) -> str:  # a digest is not the secret, but keep it out of logs anyway
        return f"ApiToken(name={self.name!r}, role={self.role!r})"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    tokens: tuple[ApiToken, ...] = ()
    metrics_public: bool = False
    insecure: bool = False

    @property
    def enabled(self) -> bool:
        """Auth is on as soon as one token is configured."""
        return bool(self.tokens)

    def identify(self, presented: str) -> ApiToken | None:
        """The token whose secret `presented` is, or None. Every digest is compared,
        in constant time, whichever matches."""
        wanted = hashlib.sha256(presented.encode()).digest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(wanted, bytes.fromhex(token.sha256)):
                found = token
        return found

    def with_token(self, name: str, role: str, secret: str) -> AuthConfig:
        token = ApiToken(name, role, digest(secret))
        return AuthConfig((*self.tokens, token), self.metrics_public, self.insecure)


def _check_token(where: str, raw: Any) -> ApiToken:
    if not isinstance(raw, dict) or set(raw) - TOKEN_FIELDS:
        raise AuthConfigError(f"{where}: only {', '.join(sorted(TOKEN_FIELDS))} are allowed")
    name, role = raw.get("name"), raw.get("role")
    if not isinstance(name, str) or not 0 < len(name) <= 64 or set(name) - NAME_CHARS:
        raise AuthConfigError(f"{where}.name: must be 1 to 64 letters, digits or _.-@")
    if role not in ROLES:
        raise AuthConfigError(f"{where}.role: must be one of {', '.join(ROLES)}")
    if ("token" in raw) == ("sha256" in raw):
        raise AuthConfigError(f"{where}: give exactly one of token and sha256")
    if "token" in raw:
        secret = raw["token"]
        if not isinstance(secret, str) or len(secret) < 16:
            raise AuthConfigError(f"{where}.token: must be a string of at least 16 characters")
        return ApiToken(name, role, digest(secret))
    hexed = raw["sha256"]
    if not isinstance(hexed, str) or len(hexed) != 64 or set(hexed) - set("0123456789abcdef"):
        raise AuthConfigError(f"{where}.sha256: must be 64 lowercase hex digits")
    return ApiToken(name, role, hexed)


def _tokens_file(path: Path) -> list[Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise AuthConfigError(f"auth.tokens_file: cannot read {path} ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AuthConfigError(f"auth.tokens_file: {path} is not valid TOML ({exc})") from exc
    if set(data) - {"token"} or not isinstance(data.get("token", []), list):
        raise AuthConfigError(f"auth.tokens_file: {path} may only hold [[token]] tables")
    return list(data.get("token", []))


def parse_auth(table: Any, base_dir: Path | None = None) -> AuthConfig:
    """The `[auth]` table; `tokens_file` is read relative to `base_dir`."""
    if not isinstance(table, dict):
        raise AuthConfigError("auth: must be a table")
    unknown = sorted(set(table) - AUTH_FIELDS)
    if unknown:
        raise AuthConfigError(f"auth.{unknown[0]}: unknown setting")
    flags = {}
    for key in ("metrics_public", "insecure"):
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise AuthConfigError(f"auth.{key}: must be true or false")
        flags[key] = value
    raw = table.get("token", [])
    if not isinstance(raw, list):
        raise AuthConfigError("auth.token: must be [[auth.token]] tables")
    tokens = [_check_token(f"auth.token[{i}]", entry) for i, entry in enumerate(raw)]
    if "tokens_file" in table:
        if not isinstance(table["tokens_file"], str):
            raise AuthConfigError("auth.tokens_file: must be a path")
        path = Path(table["tokens_file"])
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        where = f"auth.tokens_file {path}: token"
        tokens += [_check_token(f"{where}[{i}]", e) for i, e in enumerate(_tokens_file(path))]
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise AuthConfigError("auth.token: names must be unique")
    return AuthConfig(tuple(tokens), flags["metrics_public"], flags["insecure"])


def dump_auth(auth: AuthConfig) -> list[str]:
    """TOML lines of `auth` (digests only), empty when it is all defaults."""
    if auth == AuthConfig():
        return []
    lines = ["", "[auth]", f"metrics_public = {str(auth.metrics_public).lower()}"]
    lines.append(f"insecure = {str(auth.insecure).lower()}")
    for token in auth.tokens:
        lines += ["", "[[auth.token]]", f'name = "{token.name}"', f'role = "{token.role}"']
        lines.append(f'sha256 = "{token.sha256}"')
    return lines
