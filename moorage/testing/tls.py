"""Certificates for a TLS-verified Docker Engine in tests, laid out the way docker reads them.

:func:`docker_tls_files` writes a throw-away CA, a server certificate for ``127.0.0.1`` (for
dockerd's ``--tlsverify --tlscacert --tlscert --tlskey``) and a client certificate in the
``ca.pem`` / ``cert.pem`` / ``key.pem`` layout that ``DOCKER_CERT_PATH`` names.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class DockerTLSFiles:
    """Where the engine's and the client's files are."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_dir: Path

    def dockerd_flags(self) -> list[str]:
        """The dockerd flags that require a client certificate signed by :attr:`ca`."""
        return ["--tlsverify", f"--tlscacert={self.ca}", f"--tlscert={self.server_cert}",
                f"--tlskey={self.server_key}"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
           usage: x509.ObjectIdentifier, ip: str | None
           ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=7))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def docker_tls_files(directory: Path, *, host_ip: str = "127.0.0.1") -> DockerTLSFiles:
    """Write a CA, a server certificate for ``host_ip`` and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(_name("moorage-test-docker-ca"))
          .issuer_name(_name("moorage-test-docker-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    server, server_key = _issue(ca, ca_key, host_ip, ExtendedKeyUsageOID.SERVER_AUTH, host_ip)
    client, client_key = _issue(ca, ca_key, "moorage-agent", ExtendedKeyUsageOID.CLIENT_AUTH,
                                None)
    files = DockerTLSFiles(ca=directory / "ca.pem", server_cert=directory / "server-cert.pem",
                           server_key=directory / "server-key.pem",
                           client_dir=directory / "client")
    files.ca.write_bytes(ca_pem)
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, files.server_key)
    files.client_dir.mkdir(exist_ok=True)
    (files.client_dir / "ca.pem").write_bytes(ca_pem)
    (files.client_dir / "cert.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(client_key, files.client_dir / "key.pem")
    return files
