"""Output files written whole or not at all: a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TextIO


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
