"""Which signaling servers the client talks to, and how: the transport rules of the login.

``wss://`` verifies the server's certificate against the system CAs, or only against a given
CA file. Plain ``ws://`` is allowed only to a loopback host (``localhost``, 127.0.0.0/8, ::1)
unless the user says ``--insecure``. The login (v2) binds the host of the URL and the RFC 5929
tls-server-end-point hash of the certificate the server presented (empty over ``ws://``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection

from signaling.auth import is_loopback_host, tls_server_end_point
from signaling.wire import normalize_host
from voice.errors import (
    InsecureServerUrl,
    SignalingProtocolError,
    SignalingUnreachable,
    UsageError,
)

__all__ = [
    "channel_binding",
    "client_tls_context",
    "is_loopback_host",
    "normalize_host",
    "server_address",
]


def server_address(url: str, *, insecure: bool = False) -> tuple[bool, str]:
    """(TLS?, the host to bind the login to) for a server URL; refuse ``ws://`` to a host that
    is not loopback unless ``insecure`` (InsecureServerUrl), and anything but ws/wss."""
    try:
        parts = urlsplit(url)
        host = normalize_host(parts.hostname or "")
    except ValueError as exc:
        raise SignalingUnreachable(f"{url!r} is not a server URL: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise SignalingUnreachable(f"{url!r} is not a server URL: use wss://HOST:PORT")
    secure = parts.scheme == "wss"
    if not secure and not insecure and not is_loopback_host(host):
        raise InsecureServerUrl(
            f"refusing plain {url}: without TLS the login and routing cross the network "
            "unprotected, and any server on the path can relay the login. Use wss://, "
            "or pass --insecure to allow it"
        )
    return secure, host


def client_tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """Verifies server certificates (chain and host name, TLS 1.2+) against the system CAs, or
    against ``ca_file`` only."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except OSError as exc:  # ssl.SSLError too: not PEM
        why = exc.strerror or str(exc)
        raise UsageError(f"--ca {ca_file}: cannot use it as a file of PEM CAs ({why})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def channel_binding(ws: ClientConnection) -> bytes:
    """tls-server-end-point (RFC 5929) of the certificate this connection verified."""
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise SignalingProtocolError("the TLS connection shows no server certificate")
    return tls_server_end_point(der)
