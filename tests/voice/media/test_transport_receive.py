"""voice.media.transport's receive path: datagrams are routed from the socket's callback (no
aioice queue, no task step per packet), in arrival order, after whatever was queued before.

No sockets: a bare aioice Connection whose socket callback (``data_received``, what aioice's
StunProtocol calls for every non-STUN datagram) the test calls itself.
"""

from __future__ import annotations

import asyncio

import pytest
from aioice import Connection

from voice.media import ice
from voice.media.sender import rtp_packet
from voice.media.srtp import SrtpContext
from voice.media.transport import MediaTransport

OURS = bytes(range(44))  # the key of what we receive ...
THEIRS = bytes(range(1, 45))  # ... and of what we send


def connected() -> Connection:
    connection = Connection(ice_controlling=True)
    connection._nominated[ice.COMPONENT] = object()  # recv() wants a pair; no socket is used
    return connection


def transport_on(connection: Connection) -> MediaTransport:
    transport = MediaTransport(connection)
    transport.set_keys(tx=THEIRS, rx=OURS)
    return transport


def packets(n: int) -> list[bytes]:
    peer = SrtpContext(OURS, THEIRS)  # the peer protects with the key we verify with
    return [
        peer.protect(rtp_packet(marker=False, seq=i, timestamp=960 * i, ssrc=7, payload=b"x" * 9))
        for i in range(n)
    ]


def seq(rtp: bytes) -> int:
    return int.from_bytes(rtp[2:4], "big")


async def test_queued_datagrams_come_first_then_each_is_routed_as_it_arrives() -> None:
    connection = connected()
    transport = transport_on(connection)
    data = packets(5)
    connection.data_received(data[0], ice.COMPONENT)  # before receive(): aioice queues them
    connection.data_received(data[1], ice.COMPONENT)
    got: list[int] = []
    task = asyncio.create_task(transport.receive(lambda p, _t: got.append(seq(p)), print))
    await asyncio.sleep(0)
    assert got == [0, 1]  # the queue, drained in order before the callback takes over
    for packet in data[2:]:
        connection.data_received(packet, ice.COMPONENT)
        assert got[-1] == seq(packet[:12])  # routed inside the callback: nothing awaited
    assert got == [0, 1, 2, 3, 4] and connection._queue.empty()
    assert transport.counters.rtp_received == 5 and transport.counters.packets_received == 5
    transport.stop()
    ice.wake_receiver(connection)  # what aioice's close() ends the queue with
    await asyncio.wait_for(task, 1)
    assert "data_received" not in vars(connection)  # the callback is aioice's own again


async def test_a_forged_datagram_is_counted_and_dropped_in_the_callback() -> None:
    connection = connected()
    transport = transport_on(connection)
    got: list[int] = []
    task = asyncio.create_task(transport.receive(lambda p, _t: got.append(seq(p)), print))
    await asyncio.sleep(0)
    forged = bytearray(packets(1)[0])
    forged[-1] ^= 1
    connection.data_received(bytes(forged), ice.COMPONENT)
    assert got == [] and transport.srtp_counters.auth_failures == 1
    transport.stop()
    ice.wake_receiver(connection)
    await asyncio.wait_for(task, 1)


async def test_a_handler_that_raises_ends_the_receive_loop_with_its_exception() -> None:
    connection = connected()
    transport = transport_on(connection)

    def broken(_packet: bytes, _arrival: float) -> None:
        raise RuntimeError("a bug in the receiver")

    task = asyncio.create_task(transport.receive(broken, print))
    await asyncio.sleep(0)
    connection.data_received(packets(1)[0], ice.COMPONENT)  # must not raise into the socket
    with pytest.raises(RuntimeError, match="a bug in the receiver"):
        await asyncio.wait_for(task, 1)
    assert "data_received" not in vars(connection)


async def test_datagrams_of_a_replaced_connection_are_not_routed() -> None:
    old, new = connected(), connected()
    transport = transport_on(old)
    got: list[int] = []
    task = asyncio.create_task(transport.receive(lambda p, _t: got.append(seq(p)), print))
    await asyncio.sleep(0)
    transport._connection = new  # what complete_restart() swaps in ...
    ice.wake_receiver(old)  # ... and how it moves the receive loop over
    data = packets(3)
    old.data_received(data[0], ice.COMPONENT)  # a straggler on the old path: not read
    await asyncio.sleep(0)
    new.data_received(data[1], ice.COMPONENT)
    await asyncio.sleep(0)
    new.data_received(data[2], ice.COMPONENT)
    assert got == [1, 2]
    transport.stop()
    ice.wake_receiver(new)
    await asyncio.wait_for(task, 1)
