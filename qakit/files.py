"""Output files written whole or not at all: a crash or a full disk never leaves half a file behind."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, TextIO


def write_atomic(path: str, write: Callable[[TextIO], Any]) -> None:
    """Write through a temporary file in the same folder, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; results are for everyone the umask allows
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: str, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """A JSON file, atomically, keeping non-ASCII text readable."""
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=sort_keys)))
