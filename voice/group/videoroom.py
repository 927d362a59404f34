"""The VideoRoom requests a group call makes (Janus 1.1 multistream API), audio only.

Janus is the untrusted SFU: rooms are created with ``require_e2ee`` and every publisher
declares ``"e2ee": true`` in its JSEP, so Janus forwards each Opus frame as opaque bytes (it
refuses a publisher that does not declare it, error 433). One handle plays one role: a
publisher handle joins and publishes our offer; a subscriber handle joins with the feeds it
wants, gets Janus's offer (one m-line per feed) and answers with ``start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from voice.group.janus import JanusError, JanusHandle, Json

__all__ = ["E2EE_REQUIRED", "Feed", "Joined", "Subscription", "VideoRoom"]

E2EE_REQUIRED: Final = 433  # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED: "Room requires end-to-end ..."


@dataclass(frozen=True)
class Feed:
    """A publisher in the room, by its Janus id."""

    id: int
    display: str | None = None


@dataclass(frozen=True)
class Joined:
    """Our publisher id and the publishers already in the room."""

    id: int
    publishers: tuple[Feed, ...]


@dataclass(frozen=True)
class Subscription:
    """Janus's offer for the feeds we asked for; ``feeds`` maps each m-line's mid to its feed."""

    sdp: str
    feeds: dict[str, int]
    e2ee: bool  # whether Janus marked the offer e2ee (1.1.2 does not for subscribers)


def _feeds(data: Json) -> tuple[Feed, ...]:
    return tuple(Feed(int(p["id"]), p.get("display")) for p in data.get("publishers") or ())


def _expect(data: Json, key: str, value: Any = "ok") -> Json:
    """``data`` if the plugin answered ``key: value``; else the answer was not the one asked."""
    if data.get(key) != value:
        raise JanusError(f"unexpected VideoRoom answer (wanted {key}={value!r}): {data}")
    return data


class VideoRoom:
    """VideoRoom requests on one handle (one role per handle: admin, publisher or subscriber)."""

    def __init__(self, handle: JanusHandle) -> None:
        self.handle = handle

    async def create_room(
        self,
        *,
        room: int | None = None,
        publishers: int = 16,
        require_e2ee: bool = True,
        pin: str | None = None,
        secret: str | None = None,
    ) -> int:
        """A temporary, private, Opus-only room; its id (Janus picks one unless ``room``).
        With ``pin``, Janus lets in only who gives it (join, subscribe); with ``secret``, only
        who gives that may edit, destroy or kick in it (else anyone who learns the room id)."""
        body: Json = {
            "request": "create",
            "description": "group call",
            "is_private": True,
            "permanent": False,
            "publishers": publishers,
            "audiocodec": "opus",
            "require_e2ee": require_e2ee,
        }
        if room is not None:
            body["room"] = room
        if pin is not None:
            body["pin"] = pin
        if secret is not None:
            body["secret"] = secret
        reply = await self.handle.send(body)
        return int(_expect(reply.data, "videoroom", "created")["room"])

    async def destroy_room(self, room: int, *, secret: str | None = None) -> None:
        """Close the room; Janus tells every participant it is gone."""
        body: Json = {"request": "destroy", "room": room}
        if secret is not None:
            body["secret"] = secret
        reply = await self.handle.send(body)
        _expect(reply.data, "videoroom", "destroyed")

    async def join_as_publisher(
        self, room: int, *, display: str | None = None, pin: str | None = None
    ) -> Joined:
        """Enter ``room`` as a (not yet sending) publisher."""
        body: Json = {"request": "join", "ptype": "publisher", "room": room}
        if display is not None:
            body["display"] = display
        if pin is not None:
            body["pin"] = pin
        reply = await self.handle.send(body)
        data = _expect(reply.data, "videoroom", "joined")
        return Joined(int(data["id"]), _feeds(data))

    async def publish(self, offer_sdp: str, *, e2ee: bool = True) -> str:
        """Send our offer (all candidates inside: aiortc does not trickle); Janus's answer."""
        jsep = {"type": "offer", "sdp": offer_sdp, "trickle": False, "e2ee": e2ee}
        reply = await self.handle.send({"request": "publish"}, jsep)
        _expect(reply.data, "configured")
        if reply.jsep is None or reply.jsep.get("type") != "answer":
            raise JanusError(f"Janus answered a publish without an SDP answer: {reply.data}")
        return str(reply.jsep["sdp"])

    async def subscribe(
        self, room: int, feeds: list[int], *, pin: str | None = None
    ) -> Subscription:
        """Ask for every stream of ``feeds`` on this handle's one PeerConnection."""
        body: Json = {
            "request": "join",
            "ptype": "subscriber",
            "room": room,
            "streams": [{"feed": feed} for feed in feeds],
        }
        if pin is not None:
            body["pin"] = pin
        reply = await self.handle.send(body)
        data = _expect(reply.data, "videoroom", "attached")
        if reply.jsep is None or reply.jsep.get("type") != "offer":
            raise JanusError(f"Janus attached a subscriber without an SDP offer: {data}")
        mids = {str(s["mid"]): int(s["feed_id"]) for s in data.get("streams") or ()}
        return Subscription(str(reply.jsep["sdp"]), mids, bool(reply.jsep.get("e2ee")))

    async def start(self, answer_sdp: str) -> None:
        """Answer a subscription's offer; Janus starts forwarding once DTLS is up."""
        jsep = {"type": "answer", "sdp": answer_sdp, "trickle": False}
        reply = await self.handle.send({"request": "start"}, jsep)
        _expect(reply.data, "started")

    async def publishers(self, room: int) -> tuple[Feed, ...]:
        """The participants of ``room`` that publish now (``listparticipants``)."""
        reply = await self.handle.send({"request": "listparticipants", "room": room})
        data = _expect(reply.data, "videoroom", "participants")
        return tuple(
            Feed(int(p["id"]), p.get("display"))
            for p in data.get("participants") or ()
            if p.get("publisher")
        )

    async def leave(self) -> None:
        """Leave the room (publisher: unpublish and leave; subscriber: stop receiving)."""
        reply = await self.handle.send({"request": "leave"})
        if reply.data.get("leaving") != "ok" and reply.data.get("left") != "ok":
            raise JanusError(f"unexpected VideoRoom answer to leave: {reply.data}")
