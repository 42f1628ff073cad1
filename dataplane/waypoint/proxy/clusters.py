"""The live upstream clusters: one `l7.upstreams.ClusterState` per Cluster held, kept in step with
the config store, and the outlier-detection timer.

A state is built the first time a request (or the timer) needs its cluster and then updated in
place: a new Cluster goes to `update_cluster` and a new ClusterLoadAssignment to
`update_assignment`, so load-balancer cursors, breaker counts and outlier statistics (ejections
included) survive xDS pushes, as in Envoy. Store objects are replaced, never mutated, on every
change (config.py), so object identity tells what changed. Not thread-safe: the event loop owns it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from ..config import ConfigStore
from ..l7.model import ConfigError
from ..l7.upstreams import ClusterState

log = logging.getLogger("waypoint.clusters")
MAX_TICK_PERIOD = 1.0  # the timer wakes at least this often to pick up new clusters
MIN_TICK_PERIOD = 0.01


@dataclass
class _Held:
    state: ClusterState
    cluster: cluster_pb2.Cluster
    assignment: endpoint_pb2.ClusterLoadAssignment | None


class UpstreamClusters:
    """ClusterStates by cluster name (see the module docstring)."""

    def __init__(
        self, store: ConfigStore, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._rng = rng or random.Random()
        self._held: dict[str, _Held] = {}

    def get(self, name: str) -> ClusterState | None:
        """The cluster's live state, brought up to date with the store; None when not held."""
        cluster = self._store.cluster(name)
        if cluster is None:
            self._held.pop(name, None)
            return None
        assignment = self._store.assignment(name)
        held = self._held.get(name)
        try:
            if held is None:
                state = ClusterState.build(cluster, assignment, clock=self._clock, rng=self._rng)
                held = self._held[name] = _Held(state, cluster, assignment)
                return state
            if held.cluster is not cluster:
                held.state.update_cluster(cluster)
                held.cluster = cluster
            if held.assignment is not assignment and assignment is not None:
                held.state.update_assignment(assignment)
                held.assignment = assignment
        except ConfigError as e:  # config.py checked it; keep serving the last good state
            log.warning("cluster %s: %s", name, e)
            if held is None:
                return None
        return held.state

    def states(self) -> dict[str, ClusterState]:
        """Every live state, brought up to date (for the timer and config_dump)."""
        for name in list(self._held):
            self.get(name)
        for name in self._store.snapshot.clusters:
            self.get(name)
        return {name: held.state for name, held in self._held.items()}

    def _period(self) -> float:
        intervals = [s.settings.outlier.interval for s in (h.state for h in self._held.values()) if s.settings.outlier]
        return max(MIN_TICK_PERIOD, min([MAX_TICK_PERIOD, *intervals]))

    async def run_outlier_timer(self) -> None:
        """Tick every cluster's outlier detection at (at least) its `interval`, so ejected hosts
        come back even when no request arrives. Runs until cancelled."""
        while True:
            for state in self.states().values():
                state.tick()
            await asyncio.sleep(self._period())
