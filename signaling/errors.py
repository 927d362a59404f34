"""Exceptions raised by the signaling server package.

One root, :class:`SignalingError`, so embedding code can catch everything raised on purpose.

    SignalingError
    ├── FrameError          a frame breaks the wire format; .code is the wire error code
    │                       (also ValueError); the server answers it with an ``error`` frame
    ├── ConfigError         a setting (CLI flag or environment variable) is invalid
    │                       (also ValueError)
    └── RedisUnavailable    the cluster bus's Redis could not serve a command: not
                            connected, the connection lost, or an error reply

Nothing a remote peer sends is allowed to escape as an exception from the server: the router
turns every :class:`FrameError` into an ``error`` frame, and any other exception while handling
one connection into ``internal`` for that connection only.
"""

from __future__ import annotations


class SignalingError(Exception):
    """Root of every exception the signaling package raises on purpose."""


class FrameError(SignalingError, ValueError):
    """A frame (from a client, or from a server as seen by a client) breaks the wire format.

    ``code`` is one of the error codes in :mod:`signaling.protocol`; ``id`` is the client
    message id the frame carried, when one could be read, so the answer can name it; ``kind``
    is the frame's ``type`` when the error was found after reading a known one.
    """

    def __init__(
        self, code: str, message: str, *, id: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.id = id
        self.kind = kind


class ConfigError(SignalingError, ValueError):
    """A configuration value is invalid; the message names the flag or variable to fix."""


class RedisUnavailable(SignalingError):
    """Redis could not serve a command now; the bus's connection loop is retrying, and its
    callers answer their clients with an error (``signaling.bus.BusUnavailable``)."""
