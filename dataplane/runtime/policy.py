"""Restart decisions and the crash-loop back-off, as pure functions.

Kubernetes' rules (Pod lifecycle, "Container restart policy"): `Always` restarts every exit,
`OnFailure` only a non-zero one, `Never` none. A restarted container waits an exponential
back-off: 10 s, 20 s, 40 s, ... capped at 5 minutes, and the back-off is reset once a container
has run for 10 minutes without a problem.
"""

from __future__ import annotations

from dataclasses import dataclass

ALWAYS, ON_FAILURE, NEVER = "Always", "OnFailure", "Never"


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` is started again."""
    if restart_policy == NEVER:
        return False
    if restart_policy == ON_FAILURE:
        return exit_code != 0
    return True  # Always, and the API's default


@dataclass(frozen=True)
class Backoff:
    """The crash-loop back-off schedule; `base` is configurable so tests need not wait 10 s."""

    base: float = 10.0
    cap: float = 300.0
    reset_after: float = 600.0

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        """The wait before the next start, given the previous wait (None: first restart) and how
        long the container ran this time."""
        if previous is None or ran_for >= self.reset_after:
            return min(self.base, self.cap)
        return min(previous * 2, self.cap)

    def schedule(self, restarts: int) -> list[float]:
        """The waits of `restarts` consecutive quick crashes (for docs and tests)."""
        delays: list[float] = []
        previous: float | None = None
        for _ in range(restarts):
            previous = self.next_delay(previous, 0.0)
            delays.append(previous)
        return delays


def exit_code_of(returncode: int) -> tuple[int, int | None]:
    """A Popen return code as Kubernetes reports it: (exitCode, signal). Death by signal N is
    exit code 128+N, as a shell and the container runtimes report it."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def termination_reason(exit_code: int) -> str:
    """`Completed` for 0, `Error` otherwise (the kubelet's reasons; there is no OOM killer here)."""
    return "Completed" if exit_code == 0 else "Error"
