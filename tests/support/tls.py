"""A private test CA and server certificates, made at test time with ``cryptography`` (no network).

    ca = TestCA.create(tmp_path)                       # ca.cert_path: what clients pass as --ca
    real = ca.issue(tmp_path, "real", ips=["127.0.0.1"])
    async with serve_signaling(server_config(tls_cert=real.cert, tls_key=real.key)) as s: ...

ECDSA P-256 keys (fast); certificates are signed with SHA-256 unless told otherwise.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class IssuedCert:
    cert: str  # PEM file (leaf, then the CA)
    key: str  # PEM private key file
    der: bytes  # the leaf, as the client sees it


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    cert_path: Path

    @classmethod
    def create(cls, folder: Path, name: str = "ca") -> TestCA:
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"voice test CA {name}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = folder / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def issue(
        self,
        folder: Path,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        expired: bool = False,
        digest: hashes.HashAlgorithm | None = None,
    ) -> IssuedCert:
        """A server certificate for these names, signed by this CA (``digest``: SHA-256)."""
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 10 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, digest or hashes.SHA256())
        )
        cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
        chain = cert.public_bytes(serialization.Encoding.PEM)
        chain += self.certificate.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(chain)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return IssuedCert(
            str(cert_path), str(key_path), cert.public_bytes(serialization.Encoding.DER)
        )
