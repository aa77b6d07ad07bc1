"""The pieces `qa.py` wires together, one concern a module (docs/layout.md); `qakit.pipeline` answers with a
trained model in your own code (`qakit.pipelines`)."""

from typing import Any


def __getattr__(name: str) -> Any:
    """`from qakit import pipeline` without importing torch for every other piece."""
    if name == "pipeline":
        from qakit.pipelines import pipeline

        return pipeline
    raise AttributeError(f"module 'qakit' has no attribute {name!r}")
