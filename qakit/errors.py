"""Errors the tool reports as one clear line (`qakit.launch.run`), never as a traceback."""


def one_line(text: str) -> str:
    """A library's message on one line, whatever its layout: our errors are one line each."""
    return " ".join(text.split())


class QAError(Exception):
    """Base of the errors reported as one line: the message says what is wrong, where, and the fix."""


class QAConfigError(QAError, ValueError):
    """A setting or input the tool cannot use; the message says what to change."""


class UnsupportedModelError(QAConfigError):
    """A model the tool cannot drive as it is configured."""


class QARunError(QAError, RuntimeError):
    """A run whose result could not be trusted (non-finite logits, a dead process): stopped, not written."""


class QAInputError(QAError, ValueError):
    """A question or context the pipeline or the server cannot answer (empty, wrong type, missing)."""
