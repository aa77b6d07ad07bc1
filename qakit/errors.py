"""Errors the tool reports as one clear line (qa.py's `cli`), never as a traceback."""


class QAConfigError(ValueError):
    """A setting or input the tool cannot use; the message says what to change."""


class UnsupportedModelError(QAConfigError):
    """A model the tool cannot drive as it is configured."""
