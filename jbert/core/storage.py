"""Writes that run out of space, and writes that must survive a crash (torch-free).

A full disk, a quota or a file-size limit (`ulimit -f`) reaches jbert in many shapes: an OSError
with ENOSPC / EDQUOT / EFBIG, a safetensors error that keeps only the text, a torch.save failure
that keeps not even that. `is_storage_full` recognises them all and `storage_full_error` turns them
into one StorageFullError naming the file, the limit, the free space and what was left behind.
jbert.core.artifacts (atomic_directory, write_json), the checkpoints and the scorers use them;
tests/test_faults_disk.py runs every writer under a real RLIMIT_FSIZE.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from jbert.core.errors import UserError

# errno values that mean "the storage refused more bytes", whatever wrote them.
_STORAGE_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# Writers that wrap the OS error in their own exception keep only its text: safetensors (Rust)
# says "File too large (os error 27)", Python wrappers "[Errno 28] ..."; torch.save's C++ stream
# writer loses the errno entirely and reports the failed stream ("basic_ios::clear: iostream
# error", "PytorchStreamWriter failed writing file").
_STORAGE_FULL_TEXTS = tuple(f"(os error {code})" for code in sorted(_STORAGE_FULL_ERRNOS)) + tuple(
    f"[Errno {code}]" for code in sorted(_STORAGE_FULL_ERRNOS)) + (
    "basic_ios::clear: iostream error", "PytorchStreamWriter failed writing file",
)


class StorageFullError(UserError):
    """The disk, a quota or a file-size limit refused a write.

    Not the user's input (exit code 1, not 2), but like a UserError it is one clear message
    without a traceback: every CLI's `run_cli` prints it as `error: ...`.
    """

    exit_code = 1


def is_storage_full(err: BaseException) -> bool:
    """True when `err` (or an exception it was raised from) is a write refused for lack of space."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, StorageFullError):
            return True
        if isinstance(err, OSError) and err.errno in _STORAGE_FULL_ERRNOS:
            return True
        if not isinstance(err, OSError) and any(text in str(err) for text in _STORAGE_FULL_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False


def _storage_reason(err: BaseException) -> str:
    """Which limit refused the write, as far as the exception chain tells."""
    texts = []
    while err is not None and len(texts) < 10:
        if isinstance(err, OSError) and err.errno is not None:
            texts.append(f"[Errno {err.errno}]")
        texts.append(str(err))
        err = err.__cause__ or err.__context__
    text = " ".join(texts)
    if f"[Errno {errno.EFBIG}]" in text or f"(os error {errno.EFBIG})" in text:
        return "the file-size limit (ulimit -f) was reached"
    if f"[Errno {errno.EDQUOT}]" in text or f"(os error {errno.EDQUOT})" in text:
        return "the disk quota was exceeded"
    if f"[Errno {errno.ENOSPC}]" in text or f"(os error {errno.ENOSPC})" in text:
        return "no space left on the device"
    return "the write failed, most likely for lack of space"


def storage_full_error(err: BaseException, path: str | os.PathLike, left: str = "") -> StorageFullError:
    """A StorageFullError naming what was being written, why, the free space there and what is left behind."""
    if isinstance(err, StorageFullError):
        return err
    path = Path(path)
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 1e9:.2f} GB free on that file system"
    except OSError:
        free = "free space unknown"
    return StorageFullError(
        f"cannot write {path}: {_storage_reason(err)} ({str(err).strip() or type(err).__name__}; {free}). "
        "Free some space, or raise the file-size limit (ulimit -f) or quota, and run again"
        + (f"; {left}" if left else "")
    )


def sync_directory(directory: str | os.PathLike) -> None:
    """fsync a directory, making the renames inside it durable (a crash of the machine, not only of the process)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def sync_tree(directory: str | os.PathLike) -> None:
    """fsync every file and directory under `directory` before a rename publishes it: after a power
    loss the rename could otherwise be on disk while the files' data is not (empty files)."""
    for root, _, files in os.walk(directory):
        for name in files:
            descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        sync_directory(root)
