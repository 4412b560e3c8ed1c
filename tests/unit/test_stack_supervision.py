"""`rapport up`'s supervision: a service that exits is restarted after a growing, capped delay; one
that exits more than `max_crashes` times within the window stops the stack. The decision is a pure
function of the exit times; the supervision step runs on an injected clock with fake processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rapport.shared.settings import Settings
from rapport.stack import RestartPolicy, ServiceProcess, Stack, after_exit

POLICY = RestartPolicy(max_crashes=5, window_seconds=300.0, first_delay_seconds=1.0, max_delay_seconds=30.0)


def crash_times(times: list[float], policy: RestartPolicy = POLICY) -> list[tuple[bool, float]]:
    """Feed exits at these times through the decision, as the supervisor does."""
    kept: tuple[float, ...] = ()
    decisions = []
    for now in times:
        decision = after_exit(kept, now, policy)
        kept = decision.crashes
        decisions.append((decision.restart, decision.delay))
    return decisions


def test_the_sixth_exit_within_the_window_stops_the_stack() -> None:
    decisions = crash_times([0, 10, 20, 30, 40, 50])
    assert [restart for restart, _ in decisions] == [True] * 5 + [False]


def test_exits_spread_wider_than_the_window_never_stop_it() -> None:
    """The old supervisor stopped at the sixth exit in the stack's lifetime; one a minute is fine."""
    decisions = crash_times([n * 61.0 for n in range(100)])
    assert all(restart for restart, _ in decisions)


def test_old_exits_leave_the_window() -> None:
    # five quick exits, then quiet for longer than the window: the next one starts over
    decisions = crash_times([0, 1, 2, 3, 4, 305])
    assert decisions[-1] == (True, 1.0)
    # but an exit 299 s after the first of five is the sixth within 300 s
    assert crash_times([0, 1, 2, 3, 4, 299])[-1] == (False, 0.0)


def test_the_delay_grows_with_each_recent_exit_and_is_capped() -> None:
    assert [d for _, d in crash_times([0, 1, 2, 3, 4])] == [1.0, 2.0, 4.0, 8.0, 16.0]
    many = RestartPolicy(max_crashes=10, window_seconds=300.0, first_delay_seconds=1.0, max_delay_seconds=30.0)
    assert [d for _, d in crash_times([0, 1, 2, 3, 4, 5, 6], many)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_decision_keeps_only_the_exits_inside_the_window() -> None:
    decision = after_exit((0.0, 100.0, 250.0), 350.0, POLICY)
    assert decision.crashes == (100.0, 250.0, 350.0)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Stack:
    clock = Clock()
    stack = Stack(Settings(data_dir=tmp_path), quiet=True, restart_policy=POLICY, clock=clock)
    stack.services = [ServiceProcess("ingest", 1, process=FakeProcess(1)),  # type: ignore[arg-type]
                      ServiceProcess("scoring", 2, process=FakeProcess(2))]  # type: ignore[arg-type]
    spawned: list[str] = []

    def spawn(service: ServiceProcess) -> None:
        spawned.append(service.name)
        service.process = FakeProcess(100 + len(spawned))  # type: ignore[assignment]

    monkeypatch.setattr(stack, "_spawn", spawn)
    monkeypatch.setattr(stack, "_write_endpoints", lambda: None)
    stack.spawned = spawned  # type: ignore[attr-defined]
    return stack


def crash(service: ServiceProcess, code: int = 1) -> None:
    assert service.process is not None
    service.process.returncode = code  # type: ignore[misc]


def test_a_restart_waits_out_its_delay_on_the_clock(stack: Stack) -> None:
    clock: Clock = stack.clock  # type: ignore[assignment]
    ingest, scoring = stack.services
    assert stack.supervise_step() is None and stack.spawned == []  # type: ignore[attr-defined]
    crash(ingest)
    assert stack.supervise_step() is None
    assert ingest.restart_at == clock.now + 1.0 and stack.spawned == []  # type: ignore[attr-defined]
    clock.now += 0.5
    assert stack.supervise_step() is None and stack.spawned == []  # type: ignore[attr-defined]
    clock.now += 0.5
    assert stack.supervise_step() is None
    assert stack.spawned == ["ingest"] and ingest.restart_at is None and ingest.restarts == 1  # type: ignore[attr-defined]
    assert ingest.process is not None and ingest.process.poll() is None
    assert scoring.restarts == 0  # the other service was left alone


def test_a_service_that_keeps_exiting_stops_the_stack_with_its_reason(stack: Stack) -> None:
    clock: Clock = stack.clock  # type: ignore[assignment]
    ingest, _scoring = stack.services
    for _ in range(5):
        crash(ingest, code=3)
        assert stack.supervise_step() is None
        assert ingest.restart_at is not None
        clock.now = ingest.restart_at
        assert stack.supervise_step() is None  # restarted
    assert ingest.restarts == 5 and clock.now - 1000.0 == 1 + 2 + 4 + 8 + 16
    crash(ingest, code=3)
    reason = stack.supervise_step()
    assert reason is not None and reason.startswith("ingest exited 6 times within 300s (last code 3)")
    assert "ingest.log" in reason


def test_a_service_that_exits_now_and_then_is_restarted_for_ever(stack: Stack) -> None:
    clock: Clock = stack.clock  # type: ignore[assignment]
    ingest, _scoring = stack.services
    for _ in range(20):
        crash(ingest)
        assert stack.supervise_step() is None
        clock.now += 120.0  # past the delay; three exits at most in any 300 s
        assert stack.supervise_step() is None
    assert ingest.restarts == 20
