"""Our SQuAD scorers, identical to the official evaluate-v1.1.py / evaluate-v2.0.py (see README.md)."""
