"""sha256 of the files of a directory, and which of them no longer match (torch-free).

An export directory records the hash of every file in its manifest; the runtime compares them at
load time so a model, tokenizer or settings file edited or half-copied after export is refused
instead of served with figures that no longer describe it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_directory(directory: str | os.PathLike, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """{file name: sha256} of every file directly in DIRECTORY, except the names in EXCLUDE."""
    return {path.name: sha256_file(path) for path in sorted(Path(directory).iterdir())
            if path.is_file() and path.name not in exclude}


def mismatched_files(directory: str | os.PathLike, expected: dict[str, str], listed_in: str) -> list[str]:
    """One sentence per file of EXPECTED that is missing from DIRECTORY or whose sha256 differs."""
    problems = []
    for name, digest in expected.items():
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{path} is listed in {listed_in} but missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path} changed after export (its sha256 is not the one in {listed_in})")
    return problems
