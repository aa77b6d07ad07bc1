"""Prints one line per architecture of MODELS.md with its outcome, after the test run."""

from __future__ import annotations

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
