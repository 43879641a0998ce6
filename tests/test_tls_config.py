"""Ring 1: the `[tls]` table: paths relative to the file, `{id}` per peer, https URLs,
and clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from peer.config import ConfigError, dump_config, parse_config, with_nodes

NODES = '[[node]]\nid = 1\nhost = "127.0.0.1"\nport = 7001\n'


def test_tls_makes_https_peers_with_their_own_certificates() -> None:
    text = NODES + '[tls]\nca = "c/ca.pem"\ncert = "c/node-{id}.pem"\nkey = "c/node-{id}.key"\n'
    config = parse_config(tomllib.loads(text), Path("/etc/bullyq"))
    assert config.tls is not None and config.tls.mutual
    assert config.tls.ca == "/etc/bullyq/c/ca.pem"
    assert config.tls.cert_of(3) == "/etc/bullyq/c/node-3.pem"
    assert config.tls.key_of(3) == "/etc/bullyq/c/node-3.key"
    assert config.node(1).url == "https://127.0.0.1:7001"
    assert with_nodes(config, 3).node(3).url == "https://127.0.0.1:7003"
    assert parse_config(tomllib.loads(dump_config(config))) == config


def test_without_tls_peers_speak_http() -> None:
    config = parse_config(tomllib.loads(NODES))
    assert config.tls is None and config.node(1).url == "http://127.0.0.1:7001"
    assert "[tls]" not in dump_config(config)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('ca = "a"\ncert = "b"\n', "tls.key: is required"),
        ('ca = "a"\ncert = "b"\nkey = ""\n', "tls.key: must be a file path"),
        ('ca = "a"\ncert = "b"\nkey = "c"\nmutual = 1\n', "tls.mutual: must be true or false"),
        ('ca = "a"\ncert = "b"\nkey = "c"\nciphers = "x"\n', "tls.ciphers: unknown setting"),
    ],
)
def test_a_bad_tls_table_is_refused_naming_the_field(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(tomllib.loads(NODES + "[tls]\n" + table))
