"""emomesh.logs.OutageLog: a dependency's outage logged at a bounded rate, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from emomesh.logs import OutageLog

LOGGER = "emomesh.test.outage"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, dict[str, object]]]:
    return [(r.levelname, r.getMessage(), getattr(r, "fields", {})) for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outage(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> OutageLog:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return OutageLog(logging.getLogger(LOGGER), "redis", interval_s=10.0, clock=clock)


def test_nothing_is_logged_while_the_dependency_answers(outage: OutageLog, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(100):
        outage.success()
    assert lines(caplog) == [] and not outage.down


def test_an_outage_logs_one_warning_then_a_summary_per_interval_then_one_recovery(
    outage: OutageLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    outage.failure(ConnectionError("Connection refused"), operation="read")
    assert outage.down
    # Four failures a second for 25 s (a step a float represents exactly, so the interval is exact).
    for _ in range(100):
        clock.now += 0.25
        outage.failure(ConnectionError("Connection refused"), operation="write")
    clock.now += 1.0
    outage.success()
    outage.success()

    logged = lines(caplog)
    assert logged[0] == (
        "WARNING",
        "redis unavailable",
        {"error": "ConnectionError: Connection refused", "operation": "read"},
    )
    summaries = logged[1:-1]
    assert [(level, message) for level, message, _ in summaries] == [("WARNING", "redis still unavailable")] * 2
    assert [fields["down_s"] for _, _, fields in summaries] == [10.0, 20.0]
    assert summaries[0][2]["last_error"] == "ConnectionError: Connection refused"
    assert summaries[0][2]["operation"] == "write"
    # Every failure is accounted for: the first, the two summaries' counts, and the rest since.
    assert sum(int(str(fields["failures"])) for _, _, fields in summaries) == 80
    assert logged[-1] == ("INFO", "redis available again", {"down_s": 26.0, "failures": 101})
    assert not outage.down


def test_a_new_outage_after_recovery_warns_again(
    outage: OutageLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    outage.failure("timed out")
    clock.now += 3.0
    outage.success()
    clock.now += 1.0
    outage.failure("timed out")
    outage.failure("timed out")
    assert [(level, message) for level, message, _ in lines(caplog)] == [
        ("WARNING", "redis unavailable"),
        ("INFO", "redis available again"),
        ("WARNING", "redis unavailable"),
    ]
    assert lines(caplog)[1][2] == {"down_s": 3.0, "failures": 1}
