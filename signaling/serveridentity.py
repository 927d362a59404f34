"""The server's identity from its files: TLS certificate and key, and the deployment id.

Adapter for :class:`signaling.auth.ServerIdentity` (pure): it reads what the pure code needs.

* ``tls_cert`` / ``tls_key`` (PEM): the server serves ``wss://`` with them. The first
  certificate in ``tls_cert`` is the one clients see; logins are bound to its RFC 5929
  tls-server-end-point hash, so a TLS-terminating proxy in front of the server breaks every
  login (``wrong_server``) unless it presents this very certificate (deploy/haproxy.cfg).
* ``server_id``: set it (every instance of one deployment must share it), or leave it empty
  and it is generated once and kept in ``<db>.server-id`` (0644, one line). With the registry
  in memory (``:memory:`` or empty ``db``) a fresh id is made per run, like the registry. With
  a ``postgresql://`` registry there is no file to keep it next to, and the instances sharing
  that database are one deployment: ``server_id`` must be set (the same on each).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signaling.auth import ServerIdentity, new_server_id
from signaling.config import Config
from signaling.errors import ConfigError
from signaling.registry import is_database_url
from signaling.wire import is_server_id

ID_SUFFIX = ".server-id"


def load_server_identity(config: Config) -> tuple[ServerIdentity, ssl.SSLContext | None]:
    """The identity logins are bound to, and the TLS context to serve with (None: plain)."""
    certificate, context = None, None
    if config.tls_cert:
        certificate = leaf_certificate(Path(config.tls_cert))
        context = server_tls_context(config.tls_cert, config.tls_key)
    server_id = config.server_id or load_or_create_server_id(config.db)
    try:
        identity = ServerIdentity.build(
            config.name, server_id, certificate=certificate, public_hosts=config.public_host
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return identity, context


def leaf_certificate(path: Path) -> bytes:
    """The first certificate of a PEM file, as DER (what the server presents first)."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"tls_cert: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"tls_cert: {path} holds no PEM certificate") from None
    return certs[0].public_bytes(Encoding.DER)


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.2 or later with the given chain and key; no client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert/tls_key: cannot load them: {exc}") from None
    return context


def load_or_create_server_id(db: str) -> str:
    """The id kept next to the registry file, created on first use (random, 32 hex digits)."""
    if db in ("", ":memory:"):
        return new_server_id(secrets.token_bytes)
    if is_database_url(db):
        raise ConfigError(
            "server_id: set it when db is a postgresql:// URL, the same on every instance of "
            "the deployment (16-64 of a-z 0-9 -, e.g. `openssl rand -hex 16`)"
        )
    path = Path(db + ID_SUFFIX)
    if not path.exists():
        # Written under a temporary name, then linked into place: a second instance starting
        # at the same moment reads one complete id, never a half-written file.
        temp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, (new_server_id(secrets.token_bytes) + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        except OSError as exc:
            raise ConfigError(f"cannot create the server id in {path}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the server id in {path}: {exc}") from None
    if not is_server_id(text):
        raise ConfigError(f"{path} does not hold a server id (16-64 of a-z 0-9 -): fix or delete")
    return text
