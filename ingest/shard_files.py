"""Replacing an index directory by a rebuilt copy so that a crash never leaves half of each.

``rebuild`` of the edge shard writes the copy to ``<dir>.rebuild``, then ``swap_in`` marks it
complete, renames the shard to ``<dir>.old``, the copy to ``<dir>`` and removes the old one.
``finish_interrupted_swap``, run before the shard is opened, completes or undoes whatever a
crash interrupted, and always removes ``<dir>.old``: it holds what the rebuild was meant to
erase (the vectors of deleted documents).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_COMPLETE = "rebuilt"
"""A file in a rebuilt copy: the copy is complete and may replace the shard."""


def fresh_copy_dir(path: Path) -> Path:
    """Return an empty ``<path>.rebuild`` directory (mode 0700), removing any earlier one."""
    fresh = path.with_name(path.name + ".rebuild")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(mode=0o700)
    return fresh


def swap_in(path: Path, fresh: Path) -> None:
    """Mark ``fresh`` complete, put it in ``path``'s place and remove the old directory."""
    old = path.with_name(path.name + ".old")
    write_synced(fresh / _COMPLETE, b"")
    os.rename(path, old)
    os.rename(fresh, path)
    fsync_dir(path.parent)
    (path / _COMPLETE).unlink()
    shutil.rmtree(old)


def finish_interrupted_swap(path: Path) -> None:
    """Complete or undo a swap a crash interrupted (see the module docstring)."""
    fresh = path.with_name(path.name + ".rebuild")
    old = path.with_name(path.name + ".old")
    if fresh.exists():
        if (fresh / _COMPLETE).exists() and not path.exists():
            os.rename(fresh, path)  # the crash fell between the two renames
        else:
            shutil.rmtree(fresh)
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, path)
    if path.exists():
        (path / _COMPLETE).unlink(missing_ok=True)


def write_synced(path: Path, body: bytes) -> None:
    """Write a small file (mode 0600) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, creations) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
