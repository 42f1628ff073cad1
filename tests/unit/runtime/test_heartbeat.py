"""The Node status a heartbeat writes."""

from __future__ import annotations

import pytest

from dataplane.runtime.heartbeat import node_status

pytestmark = pytest.mark.unit


def test_first_beat() -> None:
    status = node_status("node-1", "198.19.255.11", [], "T1")
    assert status["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "mesh-runtime is posting ready status",
            "lastHeartbeatTime": "T1",
            "lastTransitionTime": "T1",
        }
    ]
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "198.19.255.11"},
        {"type": "Hostname", "address": "node-1"},
    ]
    assert status["nodeInfo"]["kubeletVersion"] == "mesh-runtime"


def test_transition_time_kept_while_ready() -> None:
    first = node_status("n", None, [], "T1")["conditions"]
    second = node_status("n", None, first, "T2")["conditions"][0]
    assert (second["lastHeartbeatTime"], second["lastTransitionTime"]) == ("T2", "T1")
    was_down = [{**first[0], "status": "Unknown"}]
    assert node_status("n", None, was_down, "T3")["conditions"][0]["lastTransitionTime"] == "T3"
    assert node_status("n", None, [], "T1")["addresses"] == [{"type": "Hostname", "address": "n"}]
