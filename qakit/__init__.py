"""The pieces `qa.py` wires together, one concern a module (README: Layout)."""
