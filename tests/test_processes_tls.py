"""Ring 3: a TLS cluster. `python -m peer certs` makes a CA and the peers' certificates;
three peers serve HTTPS with mutual TLS between them, elect a leader, replicate and run
a task submitted through a follower with the client's `ca=`. Plain HTTP gets no answer,
a client without the CA refuses the peers' certificates, and a peer route reached
without a peer certificate is refused, as is a certificate from another CA."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer.client import Client, Unavailable
from peer.config import dump_config, load_config
from peer.runtime.auth import sign
from peer.runtime.transport import PATH as PEER_PATH
from peer.runtime.wire import encode_batch
from tests.chaos import START_TIMEOUT
from tests.conftest import ClusterFactory
from tests.harness import PROJECT_ROOT

pytest.importorskip("cryptography", reason="peer certs needs the cryptography package")


def _certs(config_path: Path, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "peer", "certs", "--config", str(config_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout[done.stdout.index("[tls]") :]


def test_a_mutual_tls_cluster_elects_replicates_and_refuses_what_lacks_a_certificate(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    plain = cluster_factory(3, start=False)  # for its free ports and its config file
    table = _certs(plain.config_path, tmp_path / "certs")
    (tmp_path / "tls.toml").write_text(dump_config(plain.config) + "\n" + table)
    tls = load_config(tmp_path / "tls.toml").tls
    assert tls is not None and tls.mutual
    cluster = cluster_factory(3, start=False, tls=tls)
    cluster.start_all()
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    assert leader == 3 and cluster.url(1).startswith("https://")

    ca = str(tmp_path / "certs" / "ca.pem")
    with Client([cluster.url(1)], ca=ca) as client:
        task = client.submit("echo", {"over": "tls"})
        done = client.wait(task["id"], timeout=20)
    assert done["state"] == "succeeded" and done["result"] == {"over": "tls"}

    node = cluster.config.node(1)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", "/health")
        conn.getresponse().read()
    conn.close()
    with (
        Client([cluster.url(1)], retries=1, retry_time=1.0) as stranger,
        pytest.raises(Unavailable, match="certificate"),
    ):
        stranger.health()

    body = encode_batch([])
    headers = sign(cluster.secret, 9, 1, "messages", 1, time.time(), body)
    secure = http.client.HTTPSConnection(
        node.host, node.port, timeout=5, context=ssl.create_default_context(cafile=ca)
    )
    secure.request("POST", PEER_PATH, body=body, headers=headers)
    answer = secure.getresponse()
    assert answer.status == 401 and b"certificate" in answer.read()
    secure.close()

    other = tmp_path / "other"
    _certs(plain.config_path, other)  # another CA: its peer certificates are not ours
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(other / "node-2.pem", other / "node-2.key")
    forged = http.client.HTTPSConnection(node.host, node.port, timeout=5, context=context)
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        forged.request("POST", PEER_PATH, body=body, headers=headers)
        forged.getresponse().read()
    forged.close()
    view = json.loads(cluster.request(1, "GET", "/cluster")[1])  # type: ignore[index]
    assert view["leader"] == 3
