"""Ring 1: API tokens and roles — the `[auth]` table, who holds which role, which route
needs which role, the bearer header, and the refusal to serve a non-loopback address
open."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from peer.config import ClusterConfig, ConfigError, NodeAddress, dump_config, exposure_problem
from peer.config import parse_config as parse
from peer.ops.dashboard import usage_lines
from peer.ops.launcher import launch_token
from peer.runtime.access import Denied, authorise, bearer, needed_role
from peer.tokens import AuthConfig, allows, digest, parse_auth

READER, WRITER, ADMIN = "r" * 20, "w" * 20, "a" * 20
AUTH = (
    AuthConfig()
    .with_token("reader", "read", READER)
    .with_token("writer", "write", WRITER)
    .with_token("boss", "admin", ADMIN)
)
NODES = '[[node]]\nid = 1\nhost = "127.0.0.1"\nport = 7001\n'


def test_roles_are_ordered_each_including_the_ones_before_it() -> None:
    assert allows("admin", "write") and allows("admin", "read") and allows("write", "read")
    assert not allows("read", "write") and not allows("write", "admin")


def test_a_token_is_known_by_its_secret_and_only_by_it() -> None:
    assert AUTH.identify(WRITER).name == "writer"  # type: ignore[union-attr]
    assert AUTH.identify(READER + "x") is None
    assert AUTH.identify("") is None
    assert AuthConfig().identify(WRITER) is None
    assert not AuthConfig().enabled and AUTH.enabled


def test_the_auth_table_takes_clear_tokens_digests_and_a_tokens_file(tmp_path: Path) -> None:
    (tmp_path / "tokens.toml").write_text(
        f'[[token]]\nname = "ci"\nrole = "write"\nsha256 = "{digest("c" * 30)}"\n'
    )
    auth = parse_auth(
        {
            "metrics_public": True,
            "tokens_file": "tokens.toml",
            "token": [{"name": "ops", "role": "admin", "token": "o" * 16}],
        },
        tmp_path,
    )
    assert [(t.name, t.role) for t in auth.tokens] == [("ops", "admin"), ("ci", "write")]
    assert auth.metrics_public and not auth.insecure
    assert auth.identify("c" * 30) is not None and auth.identify("o" * 16) is not None


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"tokens": []}, "auth.tokens: unknown setting"),
        ({"insecure": "yes"}, "auth.insecure: must be true or false"),
        ({"token": [{"name": "x", "role": "root", "token": "t" * 16}]}, "auth.token[0].role"),
        ({"token": [{"name": "x", "role": "read", "token": "short"}]}, "auth.token[0].token"),
        ({"token": [{"name": "x", "role": "read"}]}, "exactly one of token and sha256"),
        ({"token": [{"name": "x", "role": "read", "sha256": "ab"}]}, "auth.token[0].sha256"),
        ({"token": [{"name": 'a"b', "role": "read", "token": "t" * 16}]}, "auth.token[0].name"),
        ({"token": [{"name": "x", "role": "read", "token": "t" * 16}] * 2}, "names must be"),
        ({"tokens_file": "missing.toml"}, "auth.tokens_file: cannot read"),
    ],
)
def test_a_bad_auth_table_is_refused_naming_the_field(table: dict[str, object], field: str) -> None:
    text = NODES + "[auth]\n"
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse({**tomllib.loads(text), "auth": table}, Path("/nonexistent"))


def test_the_config_file_keeps_digests_only_and_reads_back_the_same() -> None:
    config = ClusterConfig(nodes=(NodeAddress(1, "127.0.0.1", 7001),), auth=AUTH)
    text = dump_config(config)
    assert WRITER not in text and digest(WRITER) in text
    assert parse(tomllib.loads(text)) == config


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/health", None),
        ("GET", "/openapi.json", None),
        ("GET", "/", None),
        ("GET", "/ui/static/{name}", None),
        ("POST", "/peer/messages", None),
        ("GET", "/cluster", "read"),
        ("GET", "/events", "read"),
        ("GET", "/metrics", "read"),
        ("GET", "/tasks/{task_id}", "read"),
        ("POST", "/tasks", "write"),
        ("POST", "/tasks/{task_id}/cancel", "write"),
        ("DELETE", "/schedules/{name}", "write"),
        ("POST", "/members/{peer}/{action}", "admin"),
        ("GET", "/members", "read"),
        ("POST", "/members", "admin"),
        ("DELETE", "/members/{peer}", "admin"),
        ("GET", "/nowhere", "read"),
    ],
)
def test_each_route_needs_its_role(method: str, path: str, role: str | None) -> None:
    assert needed_role(method, path, AUTH) == role


def test_metrics_can_be_made_public() -> None:
    public = AuthConfig(AUTH.tokens, metrics_public=True)
    assert needed_role("GET", "/metrics", public) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        (None, None),
        ("", None),
    ],
)
def test_the_bearer_header_is_read_strictly(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


def test_a_token_that_is_not_ascii_is_an_unknown_one() -> None:
    with pytest.raises(Denied) as odd:
        authorise(AUTH, "read", "Bearer \udcff\xff")
    assert odd.value.status == 401


def test_a_missing_or_unknown_token_is_401_and_a_weak_role_403() -> None:
    with pytest.raises(Denied) as missing:
        authorise(AUTH, "read", None)
    assert missing.value.status == 401 and "WWW-Authenticate" in missing.value.headers
    with pytest.raises(Denied) as unknown:
        authorise(AUTH, "read", "Bearer nope")
    assert unknown.value.status == 401 and "nope" not in unknown.value.message
    with pytest.raises(Denied) as weak:
        authorise(AUTH, "write", f"Bearer {READER}")
    assert weak.value.status == 403 and weak.value.headers == {}
    assert READER not in weak.value.message and "'reader' has role read" in weak.value.message
    assert authorise(AUTH, "admin", f"Bearer {ADMIN}").name == "boss"


def test_a_non_loopback_address_needs_tokens_and_a_secret_or_an_explicit_insecure() -> None:
    def config(host: str, auth: AuthConfig, secret: str = "s" * 32) -> ClusterConfig:
        return ClusterConfig(nodes=(NodeAddress(1, host, 7001),), auth=auth, secret=secret)

    short = exposure_problem(config("192.0.2.10", AUTH, secret="short"), 1)
    assert short is not None and "cluster.secret" in short
    assert exposure_problem(config("127.0.0.1", AuthConfig(), secret=""), 1) is None

    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert exposure_problem(config(host, AuthConfig()), 1) is None
    for host in ("0.0.0.0", "192.0.2.10", "peer1.example"):
        problem = exposure_problem(config(host, AuthConfig()), 1)
        assert problem is not None and "auth.insecure" in problem
        assert exposure_problem(config(host, AUTH), 1) is None
        assert exposure_problem(config(host, AuthConfig(insecure=True)), 1) is None


def test_a_launch_without_tokens_makes_an_admin_token_and_shows_it() -> None:
    bare = ClusterConfig(nodes=(NodeAddress(1, "127.0.0.1", 7001),))
    config, token = launch_token(bare, make_token=lambda: "t" * 43)
    assert token == "t" * 43
    assert config.auth.identify(token).role == "admin"  # type: ignore[union-attr]
    assert token not in dump_config(config)
    text = "\n".join(usage_lines("http://127.0.0.1:7001", token, True))
    assert f"export BULLYQ_TOKEN={token}" in text
    assert (
        'curl -s -X POST http://127.0.0.1:7001/tasks -H "Authorization: Bearer $BULLYQ_TOKEN"'
        in text
    )
    mine = ClusterConfig(nodes=bare.nodes, auth=AUTH)
    assert launch_token(mine) == (mine, None)
    assert "export BULLYQ_TOKEN=<yours>" in "\n".join(usage_lines("http://h:1", None, True))
