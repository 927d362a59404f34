"""Challenge-response login: fresh nonces, the server's identity, and checking a login.

No passwords: a user proves possession of the Ed25519 key that owns the username. The signed
bytes (:func:`signaling.protocol.login_message`, login v2) bind the nonce to this server (its
name and per-deployment id), to what the client saw of the connection (the host it dialed and
the RFC 5929 ``tls-server-end-point`` hash of the certificate it verified), and to the username
and key. The server accepts only its own certificate hash and host names, so a signature is
useless on another connection, server or account, and a hostile server that relays our
challenge to a user gets a signature bound to *its* certificate and host, which we refuse.

Pure: certificates come in as DER bytes (the adapter, :mod:`signaling.serveridentity`, reads files).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from signaling.messages import Login
from signaling.protocol import ErrorCode, login_message
from signaling.wire import is_server_id, normalize_host

NONCE_BYTES = 32
SERVER_ID_BYTES = 16  # 32 hex digits
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")  # a plain ws:// server answers to these
RandomBytes = Callable[[int], bytes]


def new_nonce(random_bytes: RandomBytes) -> bytes:
    """A fresh 32-byte challenge; ``random_bytes`` is injected so tests can pin it."""
    nonce = random_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("random source returned the wrong number of bytes")
    return nonce


def new_server_id(random_bytes: RandomBytes) -> str:
    """A fresh deployment id: 16 random bytes as 32 lower-case hex digits."""
    raw = random_bytes(SERVER_ID_BYTES)
    if len(raw) != SERVER_ID_BYTES:
        raise ValueError("random source returned the wrong number of bytes")
    return raw.hex()


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), in normalised form."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_server_end_point(der_certificate: bytes) -> bytes:
    """RFC 5929 section 4.1 channel binding of a server certificate (DER).

    The hash of the whole DER certificate with the hash function of its signature algorithm,
    except that MD5 and SHA-1 are replaced by SHA-256. For certificates whose signature uses
    no single hash (Ed25519, Ed448), where RFC 5929 leaves the binding undefined, SHA-256.
    """
    cert = x509.load_der_x509_certificate(der_certificate)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der_certificate)
    return digest.finalize()


def certificate_hosts(der_certificate: bytes) -> tuple[str, ...]:
    """The DNS names and IP addresses of a certificate's subjectAltName, normalised (a
    wildcard stays ``*.example.com``); empty when it has none."""
    cert = x509.load_der_x509_certificate(der_certificate)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names: list[str] = []
    for entry in san.get_values_for_type(x509.DNSName):
        try:
            names.append(normalize_pattern(entry))
        except ValueError:
            continue  # a name no client could dial as written
    names.extend(ip.compressed for ip in san.get_values_for_type(x509.IPAddress))
    return tuple(dict.fromkeys(names))


def normalize_pattern(name: str) -> str:
    """A host name, or a ``*.``-wildcard over one leftmost label, in normal form."""
    if name.startswith("*."):
        return "*." + normalize_host(name[2:])
    return normalize_host(name)


def host_matches(host: str, pattern: str) -> bool:
    """``host`` (normalised) is ``pattern``, or ``pattern`` is ``*.rest`` and ``host`` is one
    label followed by ``.rest`` (the certificate rule: a wildcard covers one label only)."""
    if not pattern.startswith("*."):
        return host == pattern
    label, dot, rest = host.partition(".")
    return bool(dot) and bool(label) and rest == pattern[2:] and not _is_ip(host)


@dataclass(frozen=True, slots=True)
class LoginRefusal:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What this server binds logins to: ``name`` and ``server_id`` (sent in the challenge),
    ``binding`` (the tls-server-end-point hash of our certificate; empty without TLS) and
    ``hosts`` (the host names clients may dial us by; ``*.`` wildcards allowed)."""

    name: str
    server_id: str
    binding: bytes = b""
    hosts: tuple[str, ...] = LOOPBACK_HOSTS

    def __post_init__(self) -> None:
        if not is_server_id(self.server_id):
            raise ValueError("server_id must be 16-64 characters of a-z 0-9 -")
        if not self.hosts:
            raise ValueError("a server must answer to at least one host name")

    @classmethod
    def build(
        cls,
        name: str,
        server_id: str,
        *,
        certificate: bytes | None = None,
        public_hosts: Iterable[str] = (),
    ) -> ServerIdentity:
        """The identity of a server with this ``certificate`` (DER, None without TLS).

        Hosts: ``public_hosts`` if any are given; else the certificate's names (TLS); else the
        loopback names (a plain server is for loopback, where the client allows ``ws://``).
        """
        hosts = tuple(dict.fromkeys(normalize_pattern(h) for h in public_hosts))
        if certificate is None:
            return cls(name, server_id, b"", hosts or LOOPBACK_HOSTS)
        hosts = hosts or certificate_hosts(certificate)
        if not hosts:
            raise ValueError("the certificate names no host (subjectAltName): set public_host")
        return cls(name, server_id, tls_server_end_point(certificate), hosts)

    def accepts_host(self, host: str) -> bool:
        return any(host_matches(host, pattern) for pattern in self.hosts)

    def check_login(self, login: Login, nonce: bytes) -> LoginRefusal | None:
        """None if ``login`` is a valid login v2 for this server and ``nonce``; else why not.

        The binding and host travel in the login only for a precise error: the signature is
        checked over *our* binding, and over a host we answer to.
        """
        if login.binding != self.binding:
            what = "a TLS certificate" if login.binding else "no TLS certificate"
            return LoginRefusal(
                ErrorCode.WRONG_SERVER,
                f"the login is bound to {what} that is not this server's "
                "(a relay or a TLS-terminating proxy in between?)",
            )
        if not self.accepts_host(login.host):
            return LoginRefusal(
                ErrorCode.WRONG_SERVER, "the login is bound to a host name this server is not"
            )
        if not verify_login(self, login, nonce):
            return LoginRefusal(ErrorCode.BAD_SIGNATURE, "signature does not verify")
        return None


def verify_login(server: ServerIdentity, login: Login, nonce: bytes) -> bool:
    """True only if ``login.sig`` is the key's signature over login v2 with this server's
    name, id and binding, the login's host (check it is ours first), the user and the nonce."""
    message = login_message(
        server=server.name,
        server_id=server.server_id,
        host=login.host,
        binding=server.binding,
        user=login.user,
        key=login.key,
        nonce=nonce,
    )
    try:
        VerifyKey(login.key).verify(message, login.sig)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
