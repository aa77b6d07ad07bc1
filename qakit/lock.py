"""One run per output folder: a run holds `OUTPUT_DIR/.qa-lock` for its lifetime, so a second run started into
the same folder (the same job launched twice) stops at once, naming the holder, instead of the two overwriting
each other's checkpoints and results.

The main process of the run (global rank 0) holds it for all the run's processes. The lock file names the
holder (host, process, start time, command) and is touched every `HEARTBEAT` seconds. A lock whose holder is
gone is taken over with a warning: on this host, when its process no longer exists; from another host (a shared
file system), when it has not been touched for `STALE_AFTER` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qakit.errors import QAConfigError
from qakit.files import check_output_dir

logger = logging.getLogger("qa")

LOCK_NAME = ".qa-lock"
HEARTBEAT = 20.0
STALE_AFTER = 120.0


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": sys.argv[0]}  # not the arguments: they may hold a token


def _read(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a holder killed while writing it: judged by its age


def _gone(path: Path, holder: dict) -> bool:
    """The holder no longer runs: its process is gone (this host), or the lock went untouched (another host)."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER
    except FileNotFoundError:
        return True


def _take(path: Path) -> bool:
    """Create the lock if no one holds it; False when someone does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(_holder(), f)
    return True


def acquire(output_dir: str) -> Path:
    """Hold the output folder's lock, taking over one whose holder is gone; QAConfigError when it is held."""
    folder = Path(output_dir)
    check_output_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while not _take(path):
        holder = _read(path)
        if holder is None:  # released meanwhile
            continue
        if not _gone(path, holder):
            who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            raise QAConfigError(f"--output_dir {folder} is in use by another run ({who}; lock file {path}): wait for "
                                "it to end, or choose another --output_dir")
        logger.warning("Taking over the lock of %s: its run (process %s on %s) is gone", folder,
                       holder.get("pid", "?"), holder.get("host", "?"))
        if _read(path) == holder:  # still the same dead holder's: remove it, then race for it again
            path.unlink(missing_ok=True)
    return path


@contextmanager
def hold_output_dir(output_dir: str, main_process: bool) -> Iterator[None]:
    """The run's lock for the block (main process only; the others are the same run), touched while held and
    released however the block ends."""
    if not main_process:
        yield
        return
    created = not Path(output_dir).exists()
    path = acquire(output_dir)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(HEARTBEAT):
            try:
                os.utime(path)
            except OSError:
                return

    threading.Thread(target=heartbeat, name="qa-lock-heartbeat", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
        if (_read(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        if created:  # a run that stopped before writing anything leaves no empty folder behind either
            with contextlib.suppress(OSError):
                path.parent.rmdir()
