"""When a process of a multi-process run dies or hangs: a deliberate timeout and one readable error.

The other processes learn of it only through their collectives (gradient all-reduce, barriers):
at once when the lost process was on the same machine (its connections close), after the
collective timeout when it hangs or its machine vanishes. `collective_failures_explained`, around
the training stages, turns the backend's exception into one line per surviving process that says
what happened and what to do, and tears the process group down so the process exits with it.
tests/test_faults_training.py kills and hangs real ranks of real 2-process launches.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from jbert.core.errors import UserError

# The collective timeout (--collective_timeout_seconds): how long a process waits in an all-reduce or
# barrier for the others. 30 minutes, PyTorch's own gloo default, made explicit and the same for NCCL
# (whose default is 10): the main process alone prepares the data and writes the model directory
# with test predictions while the others wait in a barrier, which can take many minutes on a large
# data set, and a timeout there would kill a healthy run. A dead process on the same machine is
# noticed at once (its sockets close); the timeout bounds the wait for a hung one or a lost machine.
DEFAULT_COLLECTIVE_TIMEOUT_SECONDS = 1800


class CollectiveFailure(UserError):
    """Another process of a multi-process run died or stopped answering: not the user's input (exit code 1),
    but one clear message without a traceback, like a UserError."""

    exit_code = 1


# What gloo, NCCL and torch.distributed say when a peer is gone or silent (torch 2.x wraps most of
# them in DistBackendError, older paths raise a plain RuntimeError with this text).
_PEER_LOST_TEXTS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket closed",
                    "ECONNRESET", "EPIPE", "NCCL communicator was aborted", "NCCL error", "remote process exited")
_TIMEOUT_TEXTS = ("Timed out waiting", "timed out", "Timeout", "watchdog")


def describe_collective_failure(err: BaseException, timeout_seconds: Optional[float]) -> Optional[str]:
    """One readable sentence for a failed collective operation, or None when `err` is something else."""
    import torch.distributed as dist

    text = str(err)
    is_distributed = isinstance(err, getattr(dist, "DistError", ())) or "gloo" in text or "NCCL" in text \
        or "ProcessGroup" in text
    if not is_distributed:
        return None
    rank = os.environ.get("RANK", "?")
    world = os.environ.get("WORLD_SIZE", "?")
    detail = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    if any(marker in text for marker in _PEER_LOST_TEXTS):
        what = "another process of this run has died (its connection closed)"
    elif any(marker in text for marker in _TIMEOUT_TEXTS):
        limit = f"{timeout_seconds:g} s, --collective_timeout_seconds" if timeout_seconds else "the collective timeout"
        what = f"another process of this run stopped answering for longer than the collective timeout ({limit})"
    else:
        what = "a collective operation between the processes of this run failed"
    return (
        f"process {rank} of {world}: {what} [{type(err).__name__}: {detail}]. This process stops too. "
        "Look at the other processes' logs (and the other machines') for the cause; then restart the whole run "
        "with --resume_from_checkpoint latest to continue from the newest complete checkpoint"
    )


@contextlib.contextmanager
def collective_failures_explained(collective_timeout_seconds: Optional[float] = None):
    """Turn a failed collective (a peer died, hung past the timeout, or its machine vanished) into a
    CollectiveFailure with one readable message.

    On any exception the process group is torn down before the exception leaves: the process then
    exits with its own message and code instead of aborting in gloo's threads at interpreter exit,
    and the other processes see their connections close at once instead of waiting out the timeout.
    """
    try:
        yield
    except Exception as err:
        _abandon_process_group()
        message = describe_collective_failure(err, collective_timeout_seconds)
        if message is None:
            raise
        raise CollectiveFailure(message) from err


def _abandon_process_group() -> None:
    """Destroy the default process group if there is one; a broken group may refuse, which is fine."""
    import torch.distributed as dist

    with contextlib.suppress(Exception):
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
