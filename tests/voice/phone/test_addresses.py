"""The phone's address watch: a change of this machine's addresses is seen once, promptly."""

from __future__ import annotations

import asyncio

import pytest

from voice.phone.addresses import AddressWatch, host_addresses, watch_addresses


def test_a_change_is_reported_once_and_the_first_listing_only_learns() -> None:
    now = {"192.168.1.20", "2001:db8::20"}
    watch = AddressWatch(lambda: now)
    assert not watch.changed()  # the first look learns the set
    assert not watch.changed()
    now = {"10.64.0.7", "2001:db8::20"}  # Wi-Fi to LTE: one address gone, one new
    assert watch.changed()
    assert not watch.changed()  # reported once
    now = {"10.64.0.7"}  # an address that vanishes alone is a change too
    assert watch.changed()
    now = {"10.64.0.7", "192.168.1.20"}  # ... and one that appears
    assert watch.changed()


def test_the_real_listing_has_no_loopback() -> None:
    assert not {"127.0.0.1", "::1"} & host_addresses()
    assert not AddressWatch().changed()


async def test_the_watch_loop_calls_back_on_each_change_and_survives_errors() -> None:
    listings: list[set[str] | Exception] = [
        {"192.168.1.20"},
        {"192.168.1.20"},
        OSError("netlink hiccup"),
        {"10.64.0.7"},
        {"10.64.0.7"},
    ]

    def addresses() -> set[str]:
        item = listings.pop(0) if len(listings) > 1 else listings[0]
        if isinstance(item, Exception):
            raise item
        return item

    changed = asyncio.Event()
    changes: list[int] = []

    def on_change() -> None:
        changes.append(len(listings))
        changed.set()

    task = asyncio.create_task(watch_addresses(AddressWatch(addresses), on_change, every=0.01))
    try:
        await asyncio.wait_for(changed.wait(), 5)
        await asyncio.sleep(0.1)  # the same set over and over: no more changes
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert changes == [1]  # after the listing with the new address, past the failed one
