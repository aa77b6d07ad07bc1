"""Paths the tests share; a plain module so any test can import it."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_SQUAD = REPO.parent / "shared" / "data" / "squad"
