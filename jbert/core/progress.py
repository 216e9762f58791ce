"""Progress a user can keep in a log: a tqdm bar on a terminal, one plain line every few seconds elsewhere.

On a terminal a redrawn bar is the nicest thing to watch. In a log file (CI, `nohup`, `2> train.log`)
the same bar is thousands of carriage-return frames; there `Progress` writes one line per interval
(10 s unless told, or `JBERT_PROGRESS_INTERVAL` seconds) with done/total, rate, elapsed time, ETA
and the latest values the caller passed (loss, metrics), and a last line when it is closed:

    12:04:31 training: 120/1000 steps (12%), 3.41 steps/s, elapsed 35s, ETA 4m18s, loss=0.4127

    with Progress(total=len(rows), desc="scoring", unit="row") as progress:
        for batch in batches:
            ...
            progress.update(len(batch), accuracy=0.91)

Standard library and tqdm only (no torch), so every stage, serving included, can use it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

INTERVAL_ENV = "JBERT_PROGRESS_INTERVAL"  # seconds between lines when the stream is not a terminal
DEFAULT_INTERVAL = 10.0


def default_interval() -> float:
    """Seconds between progress lines: `JBERT_PROGRESS_INTERVAL` when set to a positive number, else 10."""
    value = os.environ.get(INTERVAL_ENV, "")
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_INTERVAL
    return seconds if seconds > 0 else DEFAULT_INTERVAL


def stream_is_terminal(stream: TextIO) -> bool:
    """True when `stream` is an interactive terminal (a closed or odd stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_duration(seconds: float) -> str:
    """4m18s, 1h02m, 35s: short enough for a progress line."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _format_value(value: object) -> str:
    if isinstance(value, float):
        # Metrics and losses read best with fixed decimals (0.9833, 1.0000); tiny or huge ones need exponents.
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.4g}"
    return str(value)


class Progress:
    """Counts work done and shows it: tqdm on a terminal, a line per `interval` seconds otherwise.

    total:    units expected (None when unknown: no percentage or ETA then)
    desc:     what is being done ("training", "scoring")
    unit:     singular name of one unit ("step", "row"); an "s" is added for plurals
    initial:  units already done before this reporter started (a resumed run); the rate and ETA
              count only the work done since
    stream:   where to write (default: sys.stderr at construction time)
    interval: seconds between lines in a log (default: `default_interval()`)
    enabled:  False shows nothing at all (other ranks, --disable_tqdm)
    clock:    monotonic seconds; tests pass a fake one
    """

    def __init__(self, total: int | None, desc: str = "", *, unit: str = "step", initial: int = 0,
                 stream: TextIO | None = None, interval: float | None = None, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.done = initial
        self.values: dict[str, object] = {}
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval if interval is not None else default_interval()
        self.clock = clock
        self._initial = initial
        self._started = clock()
        self._last_line = self._started
        self._done_at_last_line = initial
        self._closed = False
        self._bar = None
        self.enabled = enabled
        if enabled and stream_is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True)

    @property
    def uses_bar(self) -> bool:
        """True when a tqdm bar is drawn (the stream is a terminal)."""
        return self._bar is not None

    def update(self, n: int = 1, **values) -> None:
        """Count `n` more units done; `values` (loss=..., accuracy=...) are shown from now on."""
        self.done += n
        if values:
            self.set_values(**values)
        if not self.enabled or self._closed:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._write_line(now)

    def set_values(self, **values) -> None:
        """Replace the shown values (e.g. the latest logged loss) without counting any work."""
        self.values.update(values)
        if self._bar is not None and self.enabled and not self._closed:
            self._bar.set_postfix({k: _format_value(v) for k, v in self.values.items()}, refresh=False)

    def close(self) -> None:
        """Finish: close the bar, or write a last line if anything happened since the previous one."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self.done != self._done_at_last_line:
            self._write_line(self.clock(), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def line(self, now: float | None = None) -> str:
        """The progress line as it would be written now (without the time of day)."""
        now = self.clock() if now is None else now
        elapsed = max(now - self._started, 0.0)
        units = f"{self.unit}es" if self.unit.endswith(("s", "sh", "ch", "x")) else f"{self.unit}s"
        parts = [f"{self.done}/{self.total} {units}" if self.total is not None else f"{self.done} {units}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        new_work = self.done - self._initial
        rate = new_work / elapsed if elapsed > 0 else None
        if rate is not None:
            parts.append(f"{rate:.3g} {units}/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total is not None and rate and self.done < self.total:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        parts += [f"{name}={_format_value(value)}" for name, value in self.values.items()]
        prefix = f"{self.desc}: " if self.desc else ""
        return prefix + ", ".join(parts)

    def _write_line(self, now: float, final: bool = False) -> None:
        text = self.line(now) + (" (done)" if final and self.total is not None and self.done >= self.total else "")
        # One complete line per write, never a carriage return: log files and `tail -f` stay readable.
        self.stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.stream.flush()
        self._last_line = now
        self._done_at_last_line = self.done
