"""Hypothesis fuzz of frames against a real server, while two clients keep talking through it.

The server runs in its own thread and event loop; a pair of clients in another one exchanges
envelopes round trip after round trip for the whole run. The fuzzer (this thread, a plain
synchronous websockets client) sends thousands of generated frames, logged in or not, and checks
that every frame gets exactly one well-formed answer. At the end the pair must have kept going.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from signaling.messages import Deliver, Error
from signaling.protocol import parse_server_frame
from signaling.server import SignalingServer, serve_signaling
from tests.signaling.helpers import make_user, server_config, url_of

T = TypeVar("T")
EXAMPLES = 1_000
TRANSPORT_CLOSE = {"too_large": 1009, "bad_frame": 1007}
NAMES = ["pairaa", "pairbb", "fuzzer", "nobody", "ghost-1", "Bad", "", "a" * 40]
REGISTERED = ["pairaa", "pairbb", "fuzzer", "ghost-1"]  # ghost-1 is registered, offline


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Pair:
    """pairaa sends to pairbb, which echoes back; count complete round trips."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.round_trips = 0
        self.stop = threading.Event()

    async def run(self) -> None:
        a = await make_user("pairaa").connect(self.url)
        b = await make_user("pairbb").connect(self.url)

        async def echo() -> None:
            async for delivery in b:
                if delivery.from_user == "pairaa" and delivery.body.startswith(b"rt-"):
                    await b.send("pairaa", delivery.body)

        echo_task = asyncio.create_task(echo())
        try:
            i = 0
            while not self.stop.is_set():
                body = b"rt-%d" % i
                await a.send("pairbb", body)
                while True:  # skip whatever the fuzzer sends us
                    got = await asyncio.wait_for(a.receive(), 10)
                    if got.from_user == "pairbb" and got.body == body:
                        break
                self.round_trips += 1
                i += 1
        finally:
            echo_task.cancel()
            await asyncio.gather(a.close(), b.close())
            with contextlib.suppress(asyncio.CancelledError):
                await echo_task


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
b64_values = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
field_values = st.one_of(
    st.sampled_from(NAMES), b64_values, st.text(max_size=70), json_values, st.just("QR==")
)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """Frames that get past the first checks: mostly the right type and version, some junk."""
    kinds = ["send", "send", "send", "login", "turn", "lookup", "key", "deliver", "welcome", "nope"]
    kind = draw(st.sampled_from(kinds))
    version = draw(st.sampled_from([1] * 8 + [2, "1", True, None]))
    frame: dict[str, Any] = {"v": version, "type": kind}
    fields = {
        "login": ["user", "key", "sig"],
        "send": ["id", "to", "body"],
        "lookup": ["id", "user"],
    }
    for key in fields.get(kind, ["id"]):
        frame[key] = draw(field_values)
    # Well-formed variants, so that every run reaches the router's answers (sent, key,
    # offline) many times, not only by luck.
    if kind == "lookup" and draw(st.booleans()):
        frame["v"], frame["id"] = 1, draw(st.text(min_size=1, max_size=64))
        frame["user"] = draw(st.sampled_from(REGISTERED + NAMES))
    if kind == "send" and draw(st.booleans()):
        frame["v"], frame["id"] = 1, draw(st.text(min_size=1, max_size=64))
        # ghost-1 weighted up: the one offline answer, otherwise about 5 in 1,000 examples
        targets = ["ghost-1"] * 4 + REGISTERED + NAMES
        frame["to"], frame["body"] = draw(st.sampled_from(targets)), draw(b64_values)
    if draw(st.integers(0, 7)) == 0:
        frame.pop(draw(st.sampled_from(sorted(frame))))
    if draw(st.integers(0, 7)) == 0:
        frame[draw(st.sampled_from(["from", "extra", "v2"]))] = draw(json_values)
    return json.dumps(frame)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(table))).flatmap(lambda i: table[i])


frames = weighted(
    (10, near_valid()),
    (2, st.binary(max_size=200)),
    (2, st.text(max_size=200)),
    (3, json_values.map(json.dumps)),
    (1, st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)),
    (1, st.integers(65_537, 70_000).map(lambda n: "x" * n)),
)


class Fuzzer:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: dict[bool, ClientConnection | None] = {True: None, False: None}
        self.examples = 0
        self.answers: dict[str, int] = {}
        self.last_error: dict[bool, str | None] = {}

    def conn(self, logged_in: bool) -> ClientConnection:
        ws = self.conns[logged_in]
        if ws is None:
            ws = connect(self.url, compression=None, max_size=2**22, open_timeout=10, legacy=True)
            challenge = json.loads(ws.recv(timeout=10))
            if logged_in:
                ws.send(make_user("fuzzer", seed=1).login_frame(challenge))
                assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            self.conns[logged_in] = ws
        return ws

    def exchange(self, logged_in: bool, frame: str | bytes) -> None:
        """Send one frame; its one answer must be a well-formed server frame."""
        self.examples += 1
        for _attempt in range(2):
            ws = self.conn(logged_in)
            try:
                ws.send(frame)
                while True:
                    answer = parse_server_frame(ws.recv(timeout=10))  # raises if malformed
                    if not isinstance(answer, Deliver):
                        break
            except ConnectionClosed as exc:
                self.closed(logged_in, exc)  # an earlier error announced it: reconnect, resend
                continue
            break
        label = f"error:{answer.code}" if isinstance(answer, Error) else answer.TYPE
        self.answers[label] = self.answers.get(label, 0) + 1
        self.last_error[logged_in] = answer.code if isinstance(answer, Error) else None

    def closed(self, logged_in: bool, exc: ConnectionClosed) -> None:
        """The server closed: only allowed right after an error frame that says why."""
        last, close = self.last_error.get(logged_in), exc.rcvd
        assert last is not None and close is not None, f"closed without an error first: {exc}"
        assert close.reason == last or close.code == TRANSPORT_CLOSE.get(last), (last, close)
        self.last_error[logged_in] = None
        self.conns[logged_in] = None


# Hypothesis warns when the random module's state changes while it draws an example; here
# the server's thread changes it (websockets draws keepalive ping payloads with
# random.getrandbits), not the strategies, which use only Hypothesis's own draws.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_fuzzed_frames_never_hurt_the_server_or_a_live_call() -> None:
    server_thread, pair_thread = LoopThread(), LoopThread()
    stack = AsyncExitStack()
    config = server_config(rate=1_000_000, burst=1_000_000, max_queue=256)
    server: SignalingServer = server_thread.run(stack.enter_async_context(serve_signaling(config)))
    pair = Pair(url_of(server))
    ghost = pair_thread.run(make_user("ghost-1").connect(url_of(server)))
    pair_thread.run(ghost.close())  # registered, then offline
    pair_done = pair_thread.submit(pair.run())
    fuzzer = Fuzzer(url_of(server))
    try:
        while pair.round_trips < 5:  # the pair is up before the fuzz starts
            assert not pair_done.done(), pair_done.exception()
            threading.Event().wait(0.01)
        before = pair.round_trips

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(logged_in=st.booleans(), frame=frames)
        def fuzz(logged_in: bool, frame: str | bytes) -> None:
            fuzzer.exchange(logged_in, frame)
            assert not pair_done.done(), f"the pair stopped: {pair_done.exception()!r}"

        fuzz()
        during = pair.round_trips - before
    finally:
        pair.stop.set()
        pair_exc = pair_done.exception(timeout=30)
        for ws in fuzzer.conns.values():
            if ws is not None:
                ws.close()
        server_thread.run(stack.aclose())
        server_thread.stop()
        pair_thread.stop()
    assert pair_exc is None, repr(pair_exc)
    assert fuzzer.examples >= EXAMPLES
    assert during >= 100, f"only {during} round trips during the fuzz"
    # the fuzz reached deep into the parser and the router, not only the first checks
    labels = (
        "sent",
        "key",
        "error:bad_json",
        "error:extra_field",
        "error:offline",
        "error:too_deep",
    )
    for label in labels:
        assert fuzzer.answers.get(label, 0) > 0, (label, fuzzer.answers)
