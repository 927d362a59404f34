"""Prometheus metrics, read from the router's plain counters at scrape time.

Each server gets its own :class:`CollectorRegistry` (never the global one), so several servers
can run in one process, as the tests do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from signaling.admission import SocketTable
from signaling.cluster import Cluster
from signaling.router import Router


class RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        r = self._router
        yield GaugeMetricFamily(
            "signaling_connections", "Open WebSocket connections.", value=r.connections
        )
        yield GaugeMetricFamily(
            "signaling_logged_in_users", "Users logged in on this server.", value=r.logged_in
        )
        yield CounterMetricFamily(
            "signaling_envelopes_routed",
            "Envelopes handed to a recipient's connection.",
            value=r.stats.envelopes_routed,
        )
        yield CounterMetricFamily(
            "signaling_frames_received",
            "Frames received from clients.",
            value=r.stats.frames_received,
        )
        errors = CounterMetricFamily(
            "signaling_errors", "Error frames sent, by error code.", labels=["code"]
        )
        for code, count in sorted(r.stats.errors.items()):
            errors.add_metric([code], count)
        yield errors
        logins = CounterMetricFamily(
            "signaling_logins", "Login attempts, by result.", labels=["result"]
        )
        for result, count in sorted(r.stats.logins.items()):
            logins.add_metric([result], count)
        yield logins
        registrations = CounterMetricFamily(
            "signaling_registrations",
            "New usernames: ok, or the error code that refused one.",
            labels=["result"],
        )
        for result, count in sorted(r.stats.registrations.items()):
            registrations.add_metric([result], count)
        yield registrations


class SocketCollector(Collector):
    def __init__(self, sockets: SocketTable[Any]) -> None:
        self._sockets = sockets

    def collect(self) -> Iterator[Metric]:
        t = self._sockets
        yield GaugeMetricFamily(
            "signaling_handshakes_in_progress",
            "Sockets accepted but not logged in yet.",
            value=t.in_handshake,
        )
        dropped = CounterMetricFamily(
            "signaling_sockets_dropped",
            "Sockets dropped at accept, by reason (address, address_handshakes, oldest).",
            labels=["reason"],
        )
        for reason, count in sorted(t.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped


class ClusterCollector(Collector):
    """Only with ``--redis``: the bus, and what became of envelopes sent to other instances."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        c = self._cluster
        yield GaugeMetricFamily(
            "signaling_bus_up", "1 while connected to the cluster bus (Redis).", value=c.bus.up
        )
        yield CounterMetricFamily(
            "signaling_bus_reconnects",
            "Connections to Redis after the first.",
            value=c.bus.reconnects,
        )
        yield CounterMetricFamily(
            "signaling_bus_duplicates_dropped",
            "Envelopes from the bus dropped as repeats of one already handled.",
            value=c.seen.duplicates,
        )
        forwarded = CounterMetricFamily(
            "signaling_envelopes_forwarded",
            "Envelopes sent to other instances, by outcome: ok, offline, queue_full, unreachable.",
            labels=["outcome"],
        )
        for outcome, count in sorted(c.router.stats.forwarded.items()):
            forwarded.add_metric([outcome], count)
        yield forwarded


def make_registry(
    router: Router, sockets: SocketTable[Any] | None = None, cluster: Cluster | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RouterCollector(router))
    if sockets is not None:
        registry.register(SocketCollector(sockets))
    if cluster is not None:
        registry.register(ClusterCollector(cluster))
    return registry
