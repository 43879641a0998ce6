"""`python -m peer certs`: a local certificate authority and one certificate per peer,
for a quick start with `[tls]` (a real deployment brings its own CA).

Writes `ca.pem` and `ca.key`, then `node-N.pem` and `node-N.key` for every `[[node]]`
of the config, into the output directory. Keys are EC P-256, written owner-only. Each
peer's certificate names its host (an IP address or a DNS name, plus `localhost` and
127.0.0.1 for a loopback host) and may serve and connect (server and client auth), so
the same certificate works for HTTPS and for mutual TLS between peers. Made with the
`cryptography` package.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from peer.config import ClusterConfig, NodeAddress

VALID_DAYS = 365


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write a file afresh (never through a symlink), owner-only when `private` even if
    it existed with another mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    mode = 0o600 if private else 0o644
    fd = os.open(path, flags, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _names(host: str) -> list[x509.GeneralName]:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        names: list[x509.GeneralName] = [x509.DNSName(host)]
        loopback = host == "localhost"
    else:
        names = [x509.IPAddress(address)]
        loopback = address.is_loopback
    if loopback:
        names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    unique: list[x509.GeneralName] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def _builder(
    subject: str, issuer: str, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def make_ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = "bullyq local CA"
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(out / "ca.key", _key_pem(key), private=True)
    _write(out / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return key, cert


def make_peer_cert(
    out: Path, node: NodeAddress, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        _builder(f"bullyq peer {node.id}", str(issuer), key.public_key())
        .add_extension(x509.SubjectAlternativeName(_names(node.host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / f"node-{node.id}.key", _key_pem(key), private=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    _write(out / f"node-{node.id}.pem", pem, private=False)


def make_certs(config: ClusterConfig, out: Path) -> list[str]:
    """A CA and every peer's certificate in `out`; the `[tls]` lines to paste."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca(out)
    for node in config.nodes:
        make_peer_cert(out, node, ca_key, ca)
    where = out.resolve()
    return [
        "[tls]",
        f'ca = "{where / "ca.pem"}"',
        f'cert = "{where / "node-{id}.pem"}"',
        f'key = "{where / "node-{id}.key"}"',
        "mutual = true",
    ]
