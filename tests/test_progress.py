"""Progress reporting: a few plain lines in a log, a tqdm bar only on a terminal."""

from __future__ import annotations

import io
import re

import pytest

from jbert.core.progress import INTERVAL_ENV, Progress, default_interval, format_duration


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_thousands_of_steps_into_a_log_write_a_bounded_number_of_lines_and_no_carriage_return():
    clock, log = FakeClock(), io.StringIO()
    with Progress(total=5000, desc="training", stream=log, interval=10.0, clock=clock) as progress:
        for step in range(5000):
            clock.now += 0.05  # 20 steps/s: 250 s in all
            progress.update(1, loss=1.0 / (step + 1))
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 24 <= len(lines) <= 26  # 250 s / 10 s, plus the last line
    assert lines[-1].endswith("(done)") and "5000/5000 steps (100%)" in lines[-1]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d training: \d+/5000 steps .*", line) for line in lines)


def test_lines_appear_at_the_interval_with_rate_eta_and_values():
    clock, log = FakeClock(), io.StringIO()
    progress = Progress(total=100, desc="training", stream=log, interval=10.0, clock=clock)
    for _ in range(9):  # 9 s of work: no line yet
        clock.now += 1.0
        progress.update(2)
    assert log.getvalue() == ""
    clock.now += 1.0
    progress.update(2, loss=0.51234)  # 10 s, 20 steps
    first = log.getvalue().splitlines()
    assert len(first) == 1
    assert first[0].endswith("training: 20/100 steps (20%), 2 steps/s, elapsed 10s, ETA 40s, loss=0.5123")
    clock.now += 5.0
    progress.update(5)  # 5 s after the last line: still one line
    assert len(log.getvalue().splitlines()) == 1
    clock.now += 5.0
    progress.update(5)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "30/100 steps (30%), 1.5 steps/s, elapsed 20s, ETA 47s, loss=0.5123" in lines[1]
    progress.close()
    progress.close()  # idempotent; nothing new happened since the last line, so no extra line
    assert len(log.getvalue().splitlines()) == 2


def test_a_resumed_run_measures_its_rate_from_where_it_started_and_unknown_totals_work():
    clock, log = FakeClock(), io.StringIO()
    progress = Progress(total=1000, desc="training", initial=900, stream=log, interval=10.0, clock=clock)
    clock.now += 10.0
    progress.update(50)
    assert "950/1000 steps (95%), 5 steps/s, elapsed 10s, ETA 10s" in log.getvalue()

    clock, log = FakeClock(), io.StringIO()
    with Progress(total=None, desc="scoring", unit="row", stream=log, interval=1.0, clock=clock) as progress:
        clock.now += 2.0
        progress.update(300)
    assert "scoring: 300 rows, 150 rows/s, elapsed 2s" in log.getvalue() and "ETA" not in log.getvalue()


def test_a_terminal_gets_a_tqdm_bar_and_disabled_writes_nothing():
    terminal = TerminalStream()
    with Progress(total=10, desc="training", stream=terminal) as progress:
        assert progress.uses_bar
        for _ in range(10):
            progress.update(1, loss=0.25)
    assert "\r" in terminal.getvalue() and "10/10" in terminal.getvalue()

    for stream in (TerminalStream(), io.StringIO()):
        clock = FakeClock()
        with Progress(total=10, stream=stream, enabled=False, clock=clock, interval=1.0) as progress:
            for _ in range(10):
                clock.now += 5.0
                progress.update(1)
        assert stream.getvalue() == "" and progress.done == 10


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "60")
    assert default_interval() == 60.0
    assert Progress(total=1, stream=io.StringIO()).interval == 60.0
    for bad in ("soon", "-1", "0"):
        monkeypatch.setenv(INTERVAL_ENV, bad)
        assert default_interval() == 10.0


@pytest.mark.parametrize("value, text", [(1.0, "1.0000"), (0.03058, "0.0306"), (0.0, "0.0000"), (2.5e-5, "2.5e-05"), (7, "7")])
def test_values_read_as_fixed_decimals(value, text):
    progress = Progress(total=None, stream=io.StringIO(), interval=1.0, clock=FakeClock())
    progress.set_values(loss=value)
    assert progress.line().endswith(f"loss={text}")


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (35.4, "35s"), (258, "4m18s"), (3720, "1h02m")])
def test_durations_are_short(seconds, text):
    assert format_duration(seconds) == text
