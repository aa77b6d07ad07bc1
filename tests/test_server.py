"""`qa.py --serve` (qakit/server.py): a live server process on a tiny BERT, asked over real HTTP (httpx), its answers
compared with the in-process pipeline's; every refusal with its status and one line, the server answering after
each; SIGTERM during a request in flight. Batching and a failing model are checked in this process on a fake
pipeline (Starlette's TestClient), where the calls the model gets can be counted."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from starlette.testclient import TestClient

import tiny_models
from helpers import OFFLINE_ENV, ONE_THREAD, REPO, free_port, run_cli
from qakit import server as server_module
from qakit.pipelines import CallSettings, Question, pipeline
from qakit.server import Limits, create_app
from squad_data import QUESTIONS

pytestmark = pytest.mark.slow  # qa.py servers in subprocesses

# batch_size 1: each window runs alone, so an answer does not depend on the questions it was batched with (padding
# to a batch's longest window changes logits in float32 rounding; tests/helpers.py, assert_evaluates_as_one_process)
FLAGS = ["--use_cpu", "true", "--max_seq_length", "64", "--doc_stride", "16", "--per_device_eval_batch_size", "1",
         "--version_2_with_negative"]
SETTINGS = dict(max_seq_len=64, doc_stride=16, max_answer_len=30, n_best_size=20, handle_impossible_answer=True,
                threshold=None, batch_size=1)
ASKED = [Question(q, context, f"q{i}{j}") for i, (context, qas) in enumerate(QUESTIONS) for j, (q, _) in enumerate(qas)]
LONG = ("The keeper Thomas Reed wrote in his journal that the beam turned once every twelve seconds. " * 700)[:60_000]


class Server:
    """A `qa.py --serve` process, its address and its log."""

    def __init__(self, model: Path, log: Path, flags: list[str]) -> None:
        self.url, self.log = f"http://127.0.0.1:{free_port()}", log
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "qa.py"), "--serve", "--model_name_or_path",
                                          str(model), "--port", self.url.rsplit(":", 1)[1], *flags],
                                         env={**os.environ, **OFFLINE_ENV, **ONE_THREAD}, stdout=out,
                                         stderr=subprocess.STDOUT)

    def ready(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not start (status {self.proc.poll()}):\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")


@pytest.fixture(scope="module")
def started(model, tmp_path_factory):
    """The module's server, started once (its start-up is most of this file's time); a test that stops it (the
    SIGTERM test, last) leaves the next one, if any, to start another."""
    holder = {"model": model, "logs": tmp_path_factory.mktemp("logs"), "server": None}
    yield holder
    if holder["server"] is not None:
        holder["server"].stop()


@pytest.fixture
def server(started) -> Server:
    if started["server"] is None or started["server"].proc.poll() is not None:
        count = len(list(started["logs"].iterdir()))
        started["server"] = Server(started["model"], started["logs"] / f"server{count}.log", FLAGS).ready()
    return started["server"]


@pytest.fixture(scope="module")
def expected(model) -> dict[int, list[list[dict]]]:
    """The in-process pipeline's answers to ASKED for top_k 1 and 3, on one thread as the server computes."""
    pipe = pipeline("question-answering", model=str(model), device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {k: pipe.answer(ASKED, pipe.settings(**SETTINGS, top_k=k)) for k in (1, 3)}
    finally:
        torch.set_num_threads(threads)


def request(q: Question, top_k: int | None = None) -> dict:
    return {"question": q.question, "context": q.context, "id": q.id} | ({} if top_k is None else {"top_k": top_k})


def reply(expected: dict, i: int, top_k: int = 1) -> dict:
    """The documented reply: the best answer's fields with the id (top_k 1), or the id and the answers."""
    answers = expected[top_k][i]
    assert answers, "the tiny model gives every asked question an answer"
    return {"id": ASKED[i].id, **answers[0]} if top_k == 1 else {"id": ASKED[i].id, "answers": answers}


def test_health_names_the_model(server, model):
    response = httpx.get(f"{server.url}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": str(model)}


def test_one_object_and_a_list_are_answered_as_the_pipeline_answers(server, expected):
    one = httpx.post(f"{server.url}/answer", json=request(ASKED[0]), timeout=60)
    assert one.status_code == 200, one.text
    assert one.json() == reply(expected, 0)
    no_id = httpx.post(f"{server.url}/answer", json={"question": ASKED[1].question, "context": ASKED[1].context})
    assert no_id.json() == expected[1][1][0]  # no id asked, none answered
    asked = [request(q, top_k=3 if i % 2 else None) for i, q in enumerate(ASKED)]
    many = httpx.post(f"{server.url}/answer", json=asked, timeout=60)
    assert many.status_code == 200, many.text
    assert many.json() == [reply(expected, i, 3 if i % 2 else 1) for i in range(len(ASKED))]
    assert any(len(reply(expected, i, 3)["answers"]) > 1 for i in range(len(ASKED)))


def test_concurrent_requests_are_all_answered_as_the_pipeline_answers(server, expected):
    """16 clients x 3 requests at once (one question, several, other top_k): every reply is its own."""
    failures: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for r in range(3):
                picked = [(n + r + k) % len(ASKED) for k in range(1 + (n + r) % 3)]
                top_k = 3 if (n + r) % 4 == 0 else 1
                body = [request(ASKED[i], top_k) for i in picked]
                want = [reply(expected, i, top_k) for i in picked]
                got = http.post("/answer", json=body if len(body) > 1 else body[0])
                if got.status_code != 200 or got.json() != (want if len(body) > 1 else want[0]):
                    failures.append(f"client {n} request {r}: {got.status_code} {got.text[:300]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def bad_requests() -> list[tuple[str, dict, int, str]]:
    """(what, httpx.request arguments, status, words the one-line error must hold)."""
    q, c = ASKED[0].question, ASKED[0].context
    chunks = (b"x" * 65536 for _ in range(20))  # no Content-Length: counted while read
    return [
        ("not JSON", dict(content=b'{"question": "Who?",'), 400, "the body is not valid JSON"),
        ("not UTF-8", dict(content=b'{"question": "\xff"}'), 400, "the body is not valid JSON"),
        ("body over the limit", dict(content=b" " * (1 << 20) + b"{}"), 413, "is 1,048,578 bytes, over this server's "
                                                                             "limit of 1,048,576 bytes"),
        ("chunked body over the limit", dict(content=chunks), 413, "passed this server's limit of 1,048,576 bytes"),
        ("list too long", dict(json=[{"question": q, "context": c}] * 65), 413, "a list of 65 questions, over this "
                                                                                "server's limit of 64"),
        ("empty list", dict(json=[]), 422, "the body is an empty list"),
        ("a string", dict(json="Who?"), 422, "the body is a string"),
        ("list item not an object", dict(json=[{"question": q, "context": c}, 3]), 422, "[1] is a number"),
        ("missing context", dict(json={"question": q}), 422, "context is missing"),
        ("missing in a list", dict(json=[{"question": q, "context": c}, {"question": q}]), 422,
         "[1].context is missing"),
        ("question not a string", dict(json={"question": 3, "context": c}), 422,
         "question must be a non-empty string (got 3)"),
        ("id not a string", dict(json={"question": q, "context": c, "id": 7}), 422, "id must be a string (got 7)"),
        ("top_k zero", dict(json={"question": q, "context": c, "top_k": 0}), 422,
         "top_k must be a positive integer (got 0)"),
        ("top_k a string", dict(json={"question": q, "context": c, "top_k": "2"}), 422,
         'top_k must be a positive integer (got "2")'),
        ("top_k a boolean", dict(json={"question": q, "context": c, "top_k": True}), 422,
         "top_k must be a positive integer (got true)"),
        ("top_k over n_best_size", dict(json={"question": q, "context": c, "top_k": 21}), 422,
         "top_k must be at most 20, this server's n_best_size (got 21)"),
        ("unknown field", dict(json={"question": q, "context": c, "lang": "en"}), 422,
         "lang is not a field of a question"),
        ("empty question", dict(json={"question": "", "context": c}), 422, "question is empty"),
        ("blank context", dict(json={"question": q, "context": " \n "}), 422, "context is empty"),
        ("context too long", dict(json={"question": q, "context": "a" * 100_001}), 413,
         "context is 100,001 characters, over this server's limit of 100,000"),
        ("question too long", dict(json={"question": "a" * 2_001, "context": c}), 413,
         "question is 2,001 characters, over this server's limit of 2,000"),
    ]


@pytest.mark.parametrize("what, kwargs, status, words", bad_requests(), ids=[b[0] for b in bad_requests()])
def test_a_bad_request_is_refused_in_one_line_and_the_server_goes_on(server, expected, what, kwargs, status, words):
    response = httpx.post(f"{server.url}/answer", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and words in body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    assert httpx.post(f"{server.url}/answer", json=request(ASKED[0])).json() == reply(expected, 0)


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/answer", 405, "GET is not allowed on /answer: use POST /answer"),
    ("POST", "/health", 405, "POST is not allowed on /health: use GET /health"),
    ("GET", "/answers", 404, "no such path /answers: this server answers POST /answer and GET /health"),
])
def test_wrong_method_or_path_is_refused_in_one_line(server, method, path, status, words):
    response = httpx.request(method, f"{server.url}{path}")
    assert (response.status_code, response.json()) == (status, {"error": words})


def test_serve_flags_become_the_pipeline_and_its_settings(model, monkeypatch, capsys):
    """qa.py's answer flags, batch size, device, host and port, as `serve` gets them (stopped there)."""
    served = {}
    monkeypatch.setattr(server_module, "serve", lambda pipe, settings, host, port: served.update(
        pipe=pipe, settings=settings, host=host, port=port))
    code, err = run_cli(["--serve", "--model_name_or_path", model, "--use_cpu", "true", "--max_seq_length", "64",
                         "--doc_stride", "16", "--max_answer_length", "8", "--n_best_size", "5",
                         "--null_score_diff_threshold", "0.25", "--version_2_with_negative",
                         "--per_device_eval_batch_size", "3", "--host", "0.0.0.0", "--port", "9999"], capsys)
    assert code == 0, err
    assert served["settings"] == CallSettings(top_k=1, doc_stride=16, max_answer_len=8, max_seq_len=64,
                                              handle_impossible_answer=True, batch_size=3, threshold=0.25,
                                              n_best_size=5)
    assert (served["host"], served["port"], served["pipe"].device.type) == ("0.0.0.0", 9999, "cpu")
    assert served["pipe"].model_dir == str(model)


@pytest.mark.parametrize("flags, words", [
    (["--port", "70000"], "--port must be 1 to 65535 (got 70000)"),
    (["--host", ""], "--host must be an address to listen on"),
    (["--train_file", "train.json"], "--serve answers the questions sent to it over HTTP: drop --dataset_name"),
    (["--question", "Who?", "--context", "Reed."], "--serve answers the questions sent to it over HTTP"),
    (["--do_eval"], "--serve answers the questions sent to it and writes nothing: drop --do_eval"),
])
def test_serve_flags_are_checked_before_a_model_loads(flags, words, capsys, tmp_path):
    code, err = run_cli(["--serve", "--model_name_or_path", tmp_path / "no-model", *flags], capsys)
    assert code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# In this process, on a fake pipeline: batching and a failing model
# --------------------------------------------------------------------------------------------


class FakePipeline:
    """Answers each question with its context's first characters (none for "no span"), records every call, and
    fails on "fail"."""

    model_dir = "fake"

    def __init__(self) -> None:
        self.defaults = CallSettings()
        self.calls: list[tuple[list[str], int]] = []

    def settings(self, **overrides) -> CallSettings:
        return dataclasses.replace(self.defaults, **overrides).checked()

    def answer(self, questions: list[Question], settings: CallSettings) -> list[list[dict]]:
        self.calls.append(([q.question for q in questions], settings.top_k))
        if any(q.question == "fail" for q in questions):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return [[{"score": 1 / (k + 1), "start": 0, "end": k + 1, "answer": q.context[:k + 1], "null_odds": None}
                 for k in range(settings.top_k if q.question != "no span" else 0)] for q in questions]


def ask_together(client: TestClient, bodies: list) -> list[httpx.Response]:
    """Every body POSTed at once, each from its own thread."""
    responses: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def post(i: int) -> None:
        barrier.wait()
        responses[i] = client.post("/answer", json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_concurrent_questions_share_a_call_per_top_k():
    fake = FakePipeline()
    with TestClient(create_app(fake, fake.defaults, Limits(max_batch=6, max_wait_ms=60_000))) as client:
        bodies = [{"question": f"q{i}", "context": f"c{i}xyz", **({"top_k": 2} if i % 3 == 0 else {})}
                  for i in range(6)]
        responses = ask_together(client, bodies)
    assert [r.status_code for r in responses] == [200] * 6
    for i, r in enumerate(responses):
        if i % 3 == 0:
            assert r.json() == {"answers": [{"score": 1.0, "start": 0, "end": 1, "answer": "c", "null_odds": None},
                                            {"score": 0.5, "start": 0, "end": 2, "answer": f"c{i}", "null_odds": None}]}
        else:
            assert r.json() == {"score": 1.0, "start": 0, "end": 1, "answer": "c", "null_odds": None}
    assert sorted((sorted(questions), k) for questions, k in fake.calls) == [(["q0", "q3"], 2),
                                                                            (["q1", "q2", "q4", "q5"], 1)]


def test_a_request_longer_than_a_batch_is_answered_in_several_calls_in_order():
    fake = FakePipeline()
    with TestClient(create_app(fake, fake.defaults, Limits(max_batch=4, max_wait_ms=0))) as client:
        response = client.post("/answer", json=[{"question": f"q{i}", "context": f"{i}", "id": str(i)}
                                                for i in range(10)])
    assert [a["id"] + a["answer"] for a in response.json()] == [f"{i}{i}" for i in range(10)]
    assert [len(questions) for questions, _ in fake.calls] == [4, 4, 2]


def test_a_question_without_any_span_is_answered_with_every_field_null():
    fake = FakePipeline()
    with TestClient(create_app(fake, fake.defaults, Limits(max_wait_ms=0))) as client:
        one = client.post("/answer", json={"question": "no span", "context": "c", "id": "x"})
        several = client.post("/answer", json={"question": "no span", "context": "c", "top_k": 3})
    assert one.json() == {"id": "x", "score": None, "start": None, "end": None, "answer": None, "null_odds": None}
    assert several.json() == {"answers": []}


def test_a_failing_model_answers_its_batch_with_500_and_the_server_goes_on():
    fake = FakePipeline()
    with TestClient(create_app(fake, fake.defaults, Limits(max_batch=2, max_wait_ms=60_000))) as client:
        failed, other = ask_together(client, [{"question": "fail", "context": "c"},
                                              {"question": "fine", "context": "c", "top_k": 2}])
        after = ask_together(client, [{"question": "again", "context": "c"}, {"question": "and", "context": "d"}])
    assert failed.status_code == 500
    assert failed.json() == {"error": "the model failed on this question's batch of 1 (RuntimeError: CUDA out of "
                                      "memory. Tried to allocate 2 GiB); the server goes on: send it again, or see "
                                      "the server's log"}
    assert other.status_code == 200 and len(other.json()["answers"]) == 2  # another top_k: another call
    assert [(r.status_code, r.json()["answer"]) for r in after] == [(200, "c"), (200, "d")]


# --------------------------------------------------------------------------------------------
# Last, as it ends the module's server
# --------------------------------------------------------------------------------------------


def test_sigterm_lets_the_request_in_flight_finish_and_the_process_exit_0(server):
    """SIGTERM while the server answers a long request (about 2 s of work): that request gets its 200, new
    connections are refused meanwhile, and the process exits 0."""
    done: dict = {}

    def ask() -> None:
        done["response"] = httpx.post(f"{server.url}/answer", json=[{"question": "Who wrote?", "context": LONG}] * 2,
                                      timeout=120)
        done["at"] = time.monotonic()

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.8)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health")
    thread.join(120)
    assert done["response"].status_code == 200, done["response"].text
    assert [bool(a["answer"]) for a in done["response"].json()] == [True, True]
    assert done["at"] > signalled, "the request was answered before the signal: make it longer"
    assert server.proc.wait(60) == 0, server.log.read_text()[-3000:]
    assert "Stopped by SIGTERM" in server.log.read_text()
