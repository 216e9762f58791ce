"""Step lines with elapsed time on stderr: export of a base model takes a minute on 2 cores."""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("jbert.export")


class StepLog:
    """Announces each slow step of an export with the seconds elapsed since the start."""

    def __init__(self, enabled: bool):
        """`enabled` False: steps go to the debug log only (export.py --quiet)."""
        self.enabled = enabled
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        """Announce a step (or only log it at debug level when progress is off)."""
        elapsed = time.perf_counter() - self.start
        line = f"[export {elapsed:6.1f}s] {message}"
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
        else:
            logger.debug(line)
