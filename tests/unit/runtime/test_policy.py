"""Restart policy decisions and the crash-loop back-off schedule."""

from __future__ import annotations

import pytest

from dataplane.runtime.policy import Backoff, exit_code_of, should_restart, termination_reason

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 0, False),
        ("Never", 137, False),
    ],
)
def test_should_restart(policy: str, code: int, restart: bool) -> None:
    assert should_restart(policy, code) is restart


def test_kubernetes_schedule_doubles_from_10s_to_5min() -> None:
    assert Backoff().schedule(8) == [10, 20, 40, 80, 160, 300, 300, 300]


def test_base_is_configurable() -> None:
    assert Backoff(base=0.5, cap=3).schedule(5) == [0.5, 1, 2, 3, 3]


def test_reset_after_ten_minutes_of_running() -> None:
    b = Backoff()
    assert b.next_delay(160, ran_for=599) == 300
    assert b.next_delay(160, ran_for=600) == 10
    assert b.next_delay(None, ran_for=5) == 10


@pytest.mark.parametrize(("rc", "expected"), [(0, (0, None)), (3, (3, None)), (-15, (143, 15)), (-9, (137, 9))])
def test_exit_codes_as_kubernetes_reports_them(rc: int, expected: tuple[int, int | None]) -> None:
    assert exit_code_of(rc) == expected


def test_termination_reason() -> None:
    assert termination_reason(0) == "Completed"
    assert termination_reason(1) == "Error"
