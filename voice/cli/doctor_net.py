"""``voice doctor``'s network measurements: the server (TLS, time), login, STUN and TURN.

Each probe does what a call does, bounded in time: connect and verify TLS as a login would
(reading the server's time from the handshake's ``Date`` header), log in with the identity, ask
for TURN credentials, and gather against every STUN/TURN URI as :mod:`voice.media.ice` does. It
returns :class:`~voice.cli.doctor_checks.Check` rows and never raises for what it measures.
Nothing here logs or prints a key or a TURN password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from voice.cli.context import Settings
from voice.cli.doctor_checks import (
    Check,
    IceAttempt,
    Skew,
    judge_ice,
    judge_tls,
    sentence,
    skew_from_date,
)
from voice.cli.doctor_local import log, unexpected
from voice.errors import (
    InsecureKeyFile,
    LoginRefused,
    PassphraseRequired,
    ServerNameChanged,
    VoiceError,
    WrongPassphrase,
)
from voice.exitcodes import ExitCode, for_exception

NET_TIMEOUT = 5.0  # s: connecting, TLS, logging in, each request
ICE_TIMEOUT = 3.0  # s: all STUN queries and TURN allocations, at once
_LOGIN_FIXES = {
    "username_taken": "this name belongs to another key on this server: restore your identity "
    "(voice id --import BACKUP) or choose another name with --user",
    "registration_closed": "this server registers no new users: ask its operator",
    "bad_invite": "this server registers new users by invitation: ask its operator",
    "wrong_server": "the login was signed for another address: use the server's own name "
    "(the one in its certificate), and no TLS-terminating proxy with another certificate",
    "bad_signature": "the server refused the signature: use the server's own name, and no "
    "TLS-terminating proxy with another certificate",
}


# -- the server -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSeen:
    """What the WebSocket handshake showed: the TLS row, and the server's time (if any)."""

    check: Check
    reachable: bool
    skew: Skew | None = None


async def check_server(settings: Settings) -> ServerSeen:
    """Connect (TLS verified as a login would), read the handshake's Date header, close."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    from voice.net.transport import client_tls_context, server_address
    from voice.phone.turn import server_on_loopback

    url, name = settings.server, "server"
    try:
        secure, _host = server_address(url, insecure=settings.insecure)
        context = client_tls_context(settings.ca_file) if secure else None
    except VoiceError as exc:
        fix = "use wss://HOST:PORT, or pass --insecure to allow plain ws:// to a remote host"
        if settings.ca_file is not None and "--ca" in str(exc):
            fix = "pass the PEM file of the CA that issued the server's certificate"
        return ServerSeen(Check.fail(name, sentence(exc), fix, for_exception(exc)), False)
    down = (
        "check the address and port (--server or VOICE_SERVER), that the server runs, and that "
        "the firewall lets TCP to that port out"
    )
    sent_at = time.time()
    try:
        ws = await ws_connect(url, open_timeout=NET_TIMEOUT, ssl=context, compression=None)
    except ssl.SSLCertVerificationError as exc:
        log.info("doctor: server: %r", exc)
        why = exc.verify_message or str(exc)
        return ServerSeen(
            Check.fail(
                name,
                f"{url}: its TLS certificate does not verify ({why}).",
                "use the name in its certificate, or pass the CA that issued it with --ca; an "
                "expired or not yet valid certificate can also mean your clock is wrong",
                ExitCode.LOGIN_REFUSED,
            ),
            False,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        text = f"{url} answered HTTP {status}, not a WebSocket: is this the signaling port?"
        return ServerSeen(Check.fail(name, text, down, ExitCode.SERVER_UNREACHABLE), False)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        log.info("doctor: server: %r", exc)
        text = f"cannot reach {url}: {_why_unreachable(exc, secure=secure)}."
        return ServerSeen(Check.fail(name, text, down, ExitCode.SERVER_UNREACHABLE), False)
    except Exception as exc:
        return ServerSeen(unexpected(name, exc), False)
    received_at = time.time()
    try:
        date = ws.response.headers.get("Date") if ws.response is not None else None
        skew = skew_from_date(date, sent_at, received_at) if date else None
        tls = ws.transport.get_extra_info("ssl_object")
        version, subject, days_left = "", "", None
        if tls is not None:
            version = str(tls.version() or "")
            cert = tls.getpeercert() or {}
            subject = _common_name(cert)
            not_after = cert.get("notAfter")
            if isinstance(not_after, str):
                days_left = (ssl.cert_time_to_seconds(not_after) - received_at) / 86_400
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1.0)
    check = judge_tls(
        url,
        secure=secure,
        loopback=server_on_loopback(url),
        tls_version=version,
        subject=subject,
        days_left=days_left,
    )
    return ServerSeen(check, True, skew)


def _common_name(cert: dict[str, Any]) -> str:
    """The certificate's first DNS or IP subjectAltName, else its common name."""
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "IP Address"):
            return str(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _why_unreachable(exc: BaseException, *, secure: bool) -> str:
    import socket

    if secure and isinstance(exc, ssl.SSLError | ConnectionResetError):
        return "the TLS handshake failed: is it a plain ws:// server, or a proxy in between?"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there (connection refused)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {NET_TIMEOUT:g} s"
    if isinstance(exc, socket.gaierror):
        return f"the name does not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# -- login, and the ICE servers it hands out ------------------------------------------------
@dataclass(frozen=True)
class LoginSeen:
    check: Check
    turn: TurnOffer | None = None  # None: not logged in


@dataclass(frozen=True)
class TurnOffer:
    """The ICE servers the server handed out (empty: it offers no TURN); the password stays in
    here and is never shown."""

    uris: tuple[str, ...] = ()
    username: str = ""
    password: str = field(default="", repr=False)
    refused: str | None = None  # why the server gave none


async def check_login(settings: Settings) -> LoginSeen:
    """Log in as ``settings.user`` with the identity (created on first use, as a call would),
    pinned as a call pins; then ask for TURN credentials. Does not pin or remember anything."""
    from voice.errors import TurnUnavailable
    from voice.net.client import SignalingClient

    name = "login"
    try:
        user = settings.require_user()
    except VoiceError as exc:
        fix = "pass --user NAME (remembered after the first call)"
        return LoginSeen(Check.fail(name, sentence(exc), fix, ExitCode.USAGE))
    try:
        created = not settings.identity_path.exists()
        identity = settings.identity()
        pin = settings.server_pins().get(settings.server)
    except InsecureKeyFile:
        return LoginSeen(Check.skip(name, "a private file or its folder is refused (above)"))
    except (PassphraseRequired, WrongPassphrase) as exc:
        fix = "set VOICE_PASSPHRASE, or run doctor on a terminal to type the passphrase"
        if isinstance(exc, WrongPassphrase):
            fix = "check the passphrase; a damaged key file needs your backup (voice id --import)"
        return LoginSeen(Check.fail(name, sentence(exc), fix, ExitCode.LOCAL_ERROR))
    except (VoiceError, OSError) as exc:
        code = for_exception(exc) or ExitCode.LOCAL_ERROR
        fix = f"check the files in {settings.config_dir}"
        return LoginSeen(Check.fail(name, sentence(exc), fix, code))
    try:
        client = await SignalingClient.connect(
            settings.server,
            user,
            identity.public_key,
            identity.sign,
            expected_server=pin.name if pin is not None and pin.server_id is None else None,
            expected_server_id=pin.server_id if pin is not None else None,
            ca_file=settings.ca_file,
            insecure=settings.insecure,
            open_timeout=NET_TIMEOUT,
            ping_interval=None,
        )
    except LoginRefused as exc:
        fix = _LOGIN_FIXES.get(str(exc.code), "try again later; if it persists, ask the operator")
        text = f"the server refused {user}: {exc} ({exc.code})."
        return LoginSeen(Check.fail(name, text, fix, ExitCode.LOGIN_REFUSED))
    except ServerNameChanged as exc:
        fix = (
            f"if the operator confirms a reinstall, delete its line from "
            f"{settings.server_pins_path}; otherwise do not log in there"
        )
        return LoginSeen(Check.fail(name, sentence(exc), fix, ExitCode.LOGIN_REFUSED))
    except VoiceError as exc:
        log.info("doctor: login: %r", exc)
        code = for_exception(exc) or ExitCode.LOGIN_REFUSED
        return LoginSeen(Check.fail(name, sentence(exc), "see the server row above", code))
    except Exception as exc:
        return LoginSeen(unexpected(name, exc))
    try:
        new = " (a new identity, just created)" if created else ""
        text = f"logged in as {user}{new}, fingerprint {identity.fingerprint.human[:19]}...; "
        text += f"server {client.server!r}, id {client.server_id[:8]}"
        text += ", as pinned." if pin is not None else " (pinned on your first call)."
        try:
            creds = await client.turn_credentials(reply_timeout=NET_TIMEOUT)
        except TurnUnavailable:
            return LoginSeen(Check.ok(name, text), TurnOffer())
        except (VoiceError, TimeoutError) as exc:
            why = "no answer" if isinstance(exc, TimeoutError) else str(exc)
            return LoginSeen(Check.ok(name, text), TurnOffer(refused=why))
        return LoginSeen(
            Check.ok(name, text), TurnOffer(creds.uris, creds.username, creds.password)
        )
    finally:
        await client.close()


async def check_ice(settings: Settings, offer: TurnOffer) -> list[Check]:
    """Query every STUN server and allocate on every TURN URI, concurrently, as a call
    gathers (voice.media.ice.gather); release everything after."""
    from voice.errors import IceFailed
    from voice.media import ice
    from voice.phone.turn import parse_ice_uris, server_on_loopback

    if offer.refused is not None:
        return [
            Check.fail(
                "TURN",
                f"the server gave no ICE servers ({offer.refused}).",
                "try again in a minute (TURN credentials are rate limited)",
            )
        ]
    if not offer.uris:
        return judge_ice([], turn_offered=False)
    servers = parse_ice_uris(offer.uris, offer.username, offer.password)
    servers = ice.IceServers(servers.stun, servers.turn, settings.ca_file)
    how: dict[str, Literal["udp", "tcp", "tls"]] = {t.uri: t.relay_transport for t in servers.turn}
    addresses = ice.interface_addresses(include_loopback=server_on_loopback(settings.server))
    connection = ice.make_connection(controlling=True)
    try:
        gathered = await ice.gather(connection, addresses, servers, server_timeout=ICE_TIMEOUT)
    except IceFailed as exc:
        return [
            Check.fail(
                "media path",
                sentence(exc),
                "check this machine's network, and the STUN and TURN servers",
                ExitCode.CALL_FAILED,
            )
        ]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 2.0)
    attempts = [
        IceAttempt(
            "turn" if a.kind == "relay" else "stun",
            a.server,
            how.get(a.server, "udp"),
            a.address,
            a.error,
        )
        for a in gathered.attempts
    ]
    return judge_ice(attempts, turn_offered=bool(servers.turn))
