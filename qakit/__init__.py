"""The pieces `qa.py` wires together, one concern a module (docs/layout.md)."""
