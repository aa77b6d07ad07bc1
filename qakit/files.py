"""Output files written whole or not at all: a crash or a full disk never leaves half a file behind, and a full
disk is one line naming the folder."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from qakit.errors import QAConfigError


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path in `path`'s folder (`.tmp-*`, removed at the next start if a kill leaves it) that
    is renamed over `path` when the block ends without an error."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".json")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; results are for everyone the umask allows
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_atomic(path: str, write: Callable[[TextIO], Any]) -> None:
    """Write a text file through `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        write(f)


def write_json(path: str, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """A JSON file, atomically, keeping non-ASCII text readable."""
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=sort_keys)))


@contextmanager
def disk_errors(output_dir: str):
    """A full disk anywhere in saving is one clear line naming the folder, whatever library was writing."""
    try:
        yield
    except Exception as err:
        text = str(err)
        full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in text \
            or "StorageFull" in text
        if not full:
            raise
        where = getattr(err, "filename", None) or output_dir
        raise QAConfigError(f"no space left on the device holding {where} (--output_dir {output_dir}): free space "
                            "there or choose another --output_dir; a rerun resumes from the last complete checkpoint"
                            ) from err


def check_output_dir(out: Path) -> None:
    """--output_dir must be a folder (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise QAConfigError(f"--output_dir {out} is a file, not a folder: choose another --output_dir (or move the "
                            "file away)")
