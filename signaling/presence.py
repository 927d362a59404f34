"""Presence: which connection a logged-in user is on *in this process*. One small interface.

The router asks only these three questions, synchronously. Across several instances the
deployment-wide presence lives in Redis (:mod:`signaling.cluster`): a login claims it there
before the router attaches it here, so this index stays the truth for local sessions and Redis
for "which instance holds the user".
"""

from __future__ import annotations

from typing import Protocol

SessionId = int


class Presence(Protocol):
    def attach(self, user: str, session: SessionId) -> SessionId | None:
        """Make ``session`` the user's current one; return the session it replaces, if any."""
        ...

    def detach(self, user: str, session: SessionId) -> None:
        """Forget ``session`` if it is still the user's current one (a newer one may be)."""
        ...

    def lookup(self, user: str) -> SessionId | None:
        """The user's current session on this process, or None if offline."""
        ...

    def __len__(self) -> int: ...


class LocalPresence:
    """In-memory presence for a single server process."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionId] = {}

    def attach(self, user: str, session: SessionId) -> SessionId | None:
        old = self._sessions.get(user)
        self._sessions[user] = session
        return old if old != session else None

    def detach(self, user: str, session: SessionId) -> None:
        if self._sessions.get(user) == session:
            del self._sessions[user]

    def lookup(self, user: str) -> SessionId | None:
        return self._sessions.get(user)

    def __len__(self) -> int:
        return len(self._sessions)
