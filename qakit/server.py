"""`qa.py --serve`: the model answers questions over HTTP, the questions of concurrent requests batched together.

Why FastAPI on uvicorn: a well-kept ASGI stack (Starlette underneath) that Python services commonly run, pydantic
to check every field of a request and name the one that is wrong, and uvicorn's graceful shutdown: on SIGTERM it
stops accepting, lets the requests in flight finish (up to `GRACE_S`), and the process then exits 0.

POST /answer takes one JSON object, or a list of up to `Limits.max_items` of them:
    {"question": str, "context": str, "id": str (optional), "top_k": int (optional: 1 to the server's n_best_size,
     default 1)}
and answers 200 with one object per question (a list, in the request's order, for a list):
    top_k 1:    {"id": str (only when given), "score": float, "start": int, "end": int, "answer": str,
                 "null_odds": float | null}
    top_k > 1:  {"id": str (only when given), "answers": [{"score", "start", "end", "answer", "null_odds"}, ...]}
                (best first, at most top_k)
`start`/`end` are the answer's character offsets (`context[start:end] == answer`; null for a generated answer),
`null_odds` the model's "no answer" odds where its head has them; a top_k 1 object whose fields are all null means
the model found no span at all. GET /health answers {"status": "ok", "model": NAME}.

Every refusal is {"error": "<one line: the field or place, what is wrong, the fix>"} and the server goes on:
400 the body is not JSON; 404 an unknown path; 405 a wrong method; 413 the body, the list, a question or a context
over its limit (`Limits`); 422 a field missing, unknown, of the wrong type or empty; 500 the model failed on the
batch the question was in (logged with its traceback; never a traceback in a response).

Batching: each request's questions go on one queue; one worker takes up to `Limits.max_batch` of them, waiting at
most `Limits.max_wait_ms` for more, and calls the pipeline once per distinct setting (top_k) in that batch, in one
model thread (the model is not thread-safe, and the event loop keeps accepting requests meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any, AsyncIterator

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from qakit import launch
from qakit.errors import QAConfigError, one_line
from qakit.pipelines import CallSettings, Question, pipeline

logger = logging.getLogger("qakit.server")

GRACE_S = 25.0  # SIGTERM: how long requests in flight may take (Kubernetes and Docker kill at 30 s, systemd at 90)
ANSWER_FIELDS = ("score", "start", "end", "answer", "null_odds")
SHAPE = '{"question": "...", "context": "..."} (with "id": "..." and "top_k": N if wanted)'
EXPECTED = {"question": "a non-empty string", "context": "a non-empty string", "id": "a string",
            "top_k": "a positive integer"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask (bigger ones are refused with 413 before the model sees them), and how the
    questions of concurrent requests are batched."""

    max_body_bytes: int = 1 << 20
    max_context_chars: int = 100_000
    max_question_chars: int = 2_000
    max_items: int = 64  # questions per request
    max_batch: int = 32  # questions per pipeline call
    max_wait_ms: float = 5.0  # how long a batch waits to fill: a little latency for much throughput under load


class AskedQuestion(BaseModel):
    """One question of a request, checked strictly: a number is not a string, and true or 2.0 is not a count."""

    model_config = ConfigDict(extra="forbid", strict=True)
    question: str
    context: str
    id: str | None = None
    top_k: int | None = Field(default=None, gt=0)


class ErrorReply(Exception):
    """A request answered with an error: its HTTP status and the one line that says what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One question waiting on the queue; `future` gets its answers (or the batch's failure)."""

    question: Question
    settings: CallSettings
    future: asyncio.Future


class Batcher:
    """Questions of concurrent requests answered together: one queue, one worker, one model thread."""

    def __init__(self, pipe: Any, limits: Limits) -> None:
        self.pipe, self.limits = pipe, limits
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-model")

    async def answer(self, questions: list[Question], settings: list[CallSettings]) -> list[list[dict]]:
        """Each question's answers, once the batches it was put in are done; the first failure is raised."""
        loop = asyncio.get_running_loop()
        jobs = [Job(q, s, loop.create_future()) for q, s in zip(questions, settings, strict=True)]
        for job in jobs:
            self.queue.put_nowait(job)
        found = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
        for result in found:
            if isinstance(result, BaseException):
                raise result
        return found

    async def run(self) -> None:
        """Forever: a batch collected, then one pipeline call per distinct setting in it (requests with another
        top_k cannot share a call), in the order they first came."""
        while True:
            groups: dict[CallSettings, list[Job]] = {}
            for job in await self.collect():
                groups.setdefault(job.settings, []).append(job)
            for settings, jobs in groups.items():
                await self.call(settings, jobs)

    async def collect(self) -> list[Job]:
        """Up to max_batch questions: the first to come, and those that come within max_wait_ms after it."""
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while len(jobs) < self.limits.max_batch:
            if not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                continue
            try:
                jobs.append(await asyncio.wait_for(self.queue.get(), deadline - loop.time()))
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on; not on 3.10
                break
        return [job for job in jobs if not job.future.done()]  # a request cancelled meanwhile needs no answer

    async def call(self, settings: CallSettings, jobs: list[Job]) -> None:
        """One pipeline call in the model thread; its failure answers these questions' requests with 500."""
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.run_in_executor(self.model_thread, self.pipe.answer, [j.question for j in jobs],
                                                 settings)
            pairs = list(zip(jobs, answers, strict=True))
        except Exception as err:  # noqa: BLE001 (any failure of the model: the server goes on)
            logger.exception("the model failed on a batch of %d questions", len(jobs))
            line = one_line(f"{type(err).__name__}: {err}")[:300]
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(ErrorReply(500, f"the model failed on this question's batch of "
                                                             f"{len(jobs)} ({line}); the server goes on: send it "
                                                             "again, or see the server's log"))
            return
        for job, found in pairs:
            if not job.future.done():
                job.future.set_result(found)


def create_app(pipe: Any, settings: CallSettings, limits: Limits) -> FastAPI:
    """The app: GET /health and POST /answer over `pipe` with `settings` (a request's top_k replaces theirs)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = batcher = Batcher(pipe, limits)
        worker = asyncio.create_task(batcher.run(), name="qa-batcher")
        yield
        worker.cancel()
        with suppress(asyncio.CancelledError):
            await worker
        batcher.model_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="qa", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ErrorReply, reply_error)
    app.add_exception_handler(HTTPException, reply_http_error)
    app.add_exception_handler(Exception, reply_internal_error)
    name = model_name(pipe)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": name}

    @app.post("/answer")
    async def answer(request: Request) -> JSONResponse:
        asked, many = parse_body(await read_body(request, limits.max_body_bytes), limits)
        calls = [call_settings(pipe, settings, item.top_k, where(i, many)) for i, item in enumerate(asked)]
        questions = [Question(item.question, item.context, item.id) for item in asked]
        found = await request.app.state.batcher.answer(questions, calls)
        shaped = [shape(item, answers, s.top_k) for item, answers, s in zip(asked, found, calls)]
        return JSONResponse(shaped if many else shaped[0])

    return app


def model_name(pipe: Any) -> str:
    """The name /health reports: the folder or hub id the pipeline loaded, else the model's own name."""
    return str(pipe.model_dir or getattr(getattr(pipe.model, "config", None), "name_or_path", "") or "")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused from its Content-Length before any of it is read, or, sent in chunks, as soon as it
    passes the limit: an oversized body never sits in memory whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ErrorReply(413, too_big(f"is {int(declared):,} bytes, over", limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ErrorReply(413, too_big("passed", limit))
    return bytes(body)


def too_big(size: str, limit: int) -> str:
    return (f"the body {size} this server's limit of {limit:,} bytes: send fewer questions per request or shorter "
            "contexts")


def parse_body(body: bytes, limits: Limits) -> tuple[list[AskedQuestion], bool]:
    """(the questions asked, whether the body is a list), each checked; the first mistake is raised."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, too deep, or a number too long to read
        raise ErrorReply(400, f"the body is not valid JSON ({one_line(str(err))[:200]}): send one object {SHAPE}, "
                              "or a list of them") from None
    if isinstance(data, dict):
        return [check_question(data, "", limits)], False
    if not isinstance(data, list) or not data:
        raise ErrorReply(422, f"the body is {kind(data)}: send one object {SHAPE}, or a list of them")
    if len(data) > limits.max_items:
        raise ErrorReply(413, f"the body is a list of {len(data)} questions, over this server's limit of "
                              f"{limits.max_items} per request: send them in several requests")
    return [check_question(item, where(i, True), limits) for i, item in enumerate(data)], True


def where(index: int, many: bool) -> str:
    """How a message names a field's place: `question` in one object, `[3].question` in a list."""
    return f"[{index}]." if many else ""


def check_question(item: Any, place: str, limits: Limits) -> AskedQuestion:
    """One question object checked: its fields (422), non-empty texts (422) and the texts' lengths (413)."""
    if not isinstance(item, dict):
        raise ErrorReply(422, f"{place.rstrip('.') or 'the body'} is {kind(item)}: each question is an object "
                              f"{SHAPE}")
    try:
        asked = AskedQuestion.model_validate(item)
    except ValidationError as err:
        raise ErrorReply(422, field_error(err.errors()[0], place)) from None
    for field, limit in (("question", limits.max_question_chars), ("context", limits.max_context_chars)):
        text = getattr(asked, field)
        if not text.strip():
            raise ErrorReply(422, f"{place}{field} is empty: send the {field}'s text")
        if len(text) > limit:
            raise ErrorReply(413, f"{place}{field} is {len(text):,} characters, over this server's limit of "
                                  f"{limit:,}: send a shorter {field}")
    return asked


def field_error(error: dict, place: str) -> str:
    """pydantic's first error as one line naming the field and what it must be."""
    field = str(error["loc"][0])  # a question object's own fields: the model is flat
    if error["type"] == "missing":
        return f"{place}{field} is missing: each question is an object {SHAPE}"
    if error["type"] == "extra_forbidden":
        return f"{place}{field} is not a field of a question: send only question, context, id and top_k"
    return f"{place}{field} must be {EXPECTED[field]} (got {json.dumps(error['input'])[:40]})"


def kind(value: Any) -> str:
    """A JSON value's kind, as a message names it."""
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def call_settings(pipe: Any, settings: CallSettings, top_k: int | None, place: str) -> CallSettings:
    """The server's settings with the request's top_k, checked by the pipeline (422 when it refuses it); top_k is
    at most the server's n_best_size, so that no request makes the model rank more candidates than it keeps."""
    if top_k is None or top_k == settings.top_k:
        return settings
    if top_k > settings.n_best_size:
        raise ErrorReply(422, f"{place}top_k must be at most {settings.n_best_size}, this server's n_best_size (got "
                              f"{top_k}): ask for fewer answers")
    try:
        return pipe.settings(**{**dataclasses.asdict(settings), "top_k": top_k})
    except ValueError as err:
        raise ErrorReply(422, f"{place}top_k: {one_line(str(err))}") from None


def shape(asked: AskedQuestion, answers: list[dict], top_k: int) -> dict:
    """One question's reply: its best answer's fields (top_k 1) or its answers (top_k > 1), with its id if given."""
    head = {} if asked.id is None else {"id": asked.id}
    picked = [{key: answer[key] for key in ANSWER_FIELDS} for answer in answers]
    if top_k > 1:
        return {**head, "answers": picked}
    return {**head, **(picked[0] if picked else dict.fromkeys(ANSWER_FIELDS))}  # no span at all: every field null


async def reply_error(request: Request, err: ErrorReply) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


async def reply_http_error(request: Request, err: HTTPException) -> JSONResponse:
    """Starlette's own refusals (unknown path, wrong method) in the same one-line shape as ours."""
    path = request.url.path[:100]
    if err.status_code == 404:
        message = f"no such path {path}: this server answers POST /answer and GET /health"
    elif err.status_code == 405:
        allowed = (err.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {path}: use {allowed} {path}"
    else:
        message = one_line(str(err.detail))
    return JSONResponse({"error": message}, status_code=err.status_code, headers=err.headers)


async def reply_internal_error(request: Request, err: Exception) -> JSONResponse:
    """A bug: one line in the reply, the traceback in the server's log (uvicorn logs it)."""
    return JSONResponse({"error": f"internal error ({type(err).__name__}); the server goes on and logged it"},
                        status_code=500)


def serve(pipe: Any, settings: CallSettings, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits()) -> None:
    """Answer on http://host:port until SIGTERM or Ctrl-C, then return once the requests in flight are answered
    (the process then exits 0: being stopped is how a server ends)."""
    config = uvicorn.Config(create_app(pipe, settings, limits), host=host, port=port, lifespan="on",
                            timeout_graceful_shutdown=GRACE_S, log_level="info")
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises the signal again once it has shut down
            signal.signal(sig, stopped)
    shown = f"[{host}]" if ":" in host else host
    logger.info("Answering questions with %s on http://%s:%d (POST /answer, GET /health); %s; %s",
                model_name(pipe), shown, port, settings, limits)
    uvicorn.Server(config).run()


def stopped(sig: int, frame: FrameType | None) -> None:
    """The signal uvicorn passes on after its graceful shutdown: the server has ended as asked."""
    logger.info("Stopped by %s", signal.Signals(sig).name)


def serve_from_args(model_args: Any, data_args: Any, training_args: Any) -> dict[str, float]:
    """`qa.py --serve`: --model_name_or_path answering with the settings of qa.py's answer flags, until stopped;
    no results (what `qa.py`'s main returns: a server has no scores). Settings the model cannot take are refused
    here, before it listens, not on every request."""
    check_serve_flags(model_args, data_args, training_args)
    launch.setup_logging(training_args)
    device = "cpu" if training_args.use_cpu or not torch.cuda.is_available() else "cuda"
    backend = data_args.backend.removesuffix("-int8")
    pipe = pipeline("question-answering", model=model_args.model_name_or_path, device=device,
                    torch_dtype=model_args.torch_dtype, backend=backend, int8=data_args.backend.endswith("-int8"),
                    tokenizer=model_args.tokenizer_name, answer_head=model_args.answer_head,
                    trust_remote_code=model_args.trust_remote_code, token=model_args.token,
                    revision=model_args.model_revision, cache_dir=model_args.cache_dir)
    threshold = data_args.null_score_diff_threshold
    try:
        settings = pipe.settings(max_seq_len=data_args.max_seq_length, doc_stride=data_args.doc_stride,
                                 max_answer_len=data_args.max_answer_length, n_best_size=data_args.n_best_size,
                                 handle_impossible_answer=data_args.version_2_with_negative,
                                 threshold=None if threshold is None else float(threshold),
                                 batch_size=training_args.per_device_eval_batch_size)
        pipe.check(settings)
    except ValueError as err:
        raise QAConfigError(f"--serve: {one_line(str(err))}") from err
    serve(pipe, settings, data_args.host, data_args.port)
    return {}


def check_serve_flags(model_args: Any, data_args: Any, training_args: Any) -> None:
    """Flags a server cannot honour, refused in one line rather than ignored."""
    given = [f"--{flag}" for flag in ("do_train", "do_eval", "do_predict") if getattr(training_args, flag)]
    if given:
        raise QAConfigError(f"--serve answers the questions sent to it and writes nothing: drop {', '.join(given)}")
    threshold = data_args.null_score_diff_threshold
    if threshold == "best":
        raise QAConfigError("--serve: --null_score_diff_threshold best comes from an evaluation, which a server does "
                            "not run: pass a number (an evaluation's eval_best_threshold), or drop it")
    if threshold is not None and not data_args.version_2_with_negative:
        raise QAConfigError("--serve: --null_score_diff_threshold decides when \"\" (no answer) wins, which needs "
                            "--version_2_with_negative")
    unsupported = [f"--{flag}" for flag in ("config_name", "start_n_top", "end_n_top", "lora_r", "load_in_4bit",
                                            "load_in_8bit", "merge_lora", "allow_untrained_head")
                   if getattr(model_args, flag)]
    unsupported += ["--predict_with_generate"] if training_args.predict_with_generate else []
    unsupported += ["--generation_num_beams", "--generation_max_length"] if (
        training_args.generation_num_beams or training_args.generation_max_length) else []
    if unsupported:
        raise QAConfigError(f"--serve answers with the model as it was saved: drop {', '.join(unsupported)} (a "
                            "generative model answers by generating with --answer_head auto)")
