"""The trained model in a user's own code: a drop-in for transformers 4.x's question-answering pipeline (which
transformers 5 removed), answering on qa.py's own windows, device-side candidates and assembly of answers.

    from qakit import pipeline
    qa = pipeline("question-answering", model="outputs/train_offline")
    qa(question="Who?", context="...")  # {"score", "start", "end", "answer", "null_odds"}

Two ways to rank and decide, on the same candidates:
- by default, transformers 4.x's: a span scores its probability within its window (start softmax x end
  softmax over the window's context and null position); each window gives its `2 top_k + 10` best spans
  (`top_k` without `align_to_words`), answers of equal text (case-insensitive) add their scores, and with
  `handle_impossible_answer` "" answers when the least null probability of the windows beats every answer;
- with `threshold` (a number, or "model": the one the model folder recorded), qa.py's: spans ranked by start +
  end logit over all windows, "" when the null odds are above the threshold, as `qa.py --do_predict` answers.
Every answer carries qa.py's `null_odds`: the least null score of the question's windows minus its best span's.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from qakit import generative
from qakit.adapters import with_adapters
from qakit.answers import NO_SPAN_ODDS, AnswerSettings, CandidateRows, QAPredictions
from qakit.batches import restore_order
from qakit.errors import QAInputError
from qakit.family import QAFamily, prepare_model
from qakit.heads import SpanHead, resolve_head
from qakit.models import load_model
from qakit.outputs import recorded_threshold
from qakit.windows import WindowIndex, prepare_eval_features

logger = logging.getLogger(__name__)

TASK = "question-answering"
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Question:
    question: str
    context: str
    id: str | None = None


@dataclass(frozen=True)
class CallSettings:
    """transformers 4.x's call arguments with its defaults, and qa.py's `threshold` and `n_best_size`."""

    top_k: int = 1
    doc_stride: int | None = None  # default: min(max_seq_len // 2, 128)
    max_answer_len: int = 15
    max_seq_len: int | None = None  # default: min(the tokenizer's model_max_length, 384)
    max_question_len: int = 64  # kept for compatibility: questions are cut only where they leave no room
    handle_impossible_answer: bool = False
    align_to_words: bool = True
    batch_size: int = 1
    threshold: float | str | None = None  # a number or "model": qa.py's ranking and no-answer decision
    n_best_size: int = 20  # qa.py's candidates per window (with a threshold)

    def checked(self) -> "CallSettings":
        """transformers' refusals, and ours for values it would have used silently (a NaN threshold never says
        "no answer")."""
        for name in ("top_k", "max_answer_len", "batch_size", "n_best_size", "max_question_len", "max_seq_len"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise QAInputError(f"{name} must be an integer of at least 1 (got {value!r})")
        if self.doc_stride is not None and (isinstance(self.doc_stride, bool) or not isinstance(self.doc_stride, int)
                                            or self.doc_stride < 0):
            raise QAInputError(f"doc_stride must be a non-negative integer (got {self.doc_stride!r})")
        if self.max_seq_len is not None and self.doc_stride is not None and self.doc_stride > self.max_seq_len:
            raise QAInputError(f"`doc_stride` ({self.doc_stride}) is larger than `max_seq_len` ({self.max_seq_len})")
        if self.threshold not in (None, "model") and (isinstance(self.threshold, bool) or not isinstance(
                self.threshold, (int, float)) or not math.isfinite(self.threshold)):
            raise QAInputError(f"threshold must be a finite number or 'model' (got {self.threshold!r})")
        return self

    @classmethod
    def given(cls, base: "CallSettings | None" = None, **overrides: Any) -> "CallSettings":
        """`base` (default: transformers' defaults) with a call's arguments (`topk`: transformers' old name of
        top_k; `padding`, `num_workers`: transformers' batching knobs, which windows here do not need)."""
        if "topk" in overrides:
            overrides.setdefault("top_k", overrides.pop("topk"))
        for ignored in ("padding", "num_workers"):
            overrides.pop(ignored, None)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise QAInputError(f"unknown argument(s) {', '.join(unknown)}: the pipeline takes {', '.join(names)}")
        return dataclasses.replace(base or cls(), **overrides).checked()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def pipeline(task: str = TASK, model: Any = None, tokenizer: Any = None, *, device: Any = None,
             torch_dtype: Any = None, dtype: Any = None, backend: str = "torch", int8: bool = False,
             answer_head: str = "auto", trust_remote_code: bool = False, token: str | None = None,
             revision: str = "main", cache_dir: str | None = None, **defaults: Any) -> "QuestionAnsweringPipeline":
    """`pipeline("question-answering", model=DIR)` as in transformers 4.x; `model` is a folder (qa.py's output,
    an adapter folder, an ONNX export with `backend="onnxruntime"`), a hub id, or a loaded model with its
    `tokenizer`. Keyword arguments of a call given here become this pipeline's defaults."""
    if task != TASK:
        raise ValueError(f"qakit.pipeline answers the {TASK!r} task only (got {task!r})")
    if model is None:
        raise ValueError("pass model=: a model folder (qa.py's --output_dir), an adapter folder or a hub id")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    settings = CallSettings.given(**defaults)
    dtype_name = _dtype_name(dtype if dtype is not None else torch_dtype)
    if backend == "onnxruntime":
        net, tok, head = _load_onnx(model, int8)
    elif isinstance(model, str):
        net, tok, head = _load_folder(model, tokenizer if isinstance(tokenizer, str) else None, dtype_name,
                                      answer_head, trust_remote_code, token, revision, cache_dir)
    else:
        net, tok, head = model, None, None
    if not isinstance(model, str) or (tokenizer is not None and not isinstance(tokenizer, str)):
        net, tok, head = _given_objects(net, tokenizer or tok, answer_head, head)
    where = torch.device("cpu") if backend == "onnxruntime" else _device(device, net)
    placed = net if backend == "onnxruntime" or getattr(net, "hf_device_map", None) else net.to(where)
    return QuestionAnsweringPipeline(placed, tok, head, where, model if isinstance(model, str) else None, settings)


def _dtype_name(dtype: Any) -> str:
    """A dtype as qa.py's --torch_dtype names it."""
    if dtype is None:
        return "float32"
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "bfloat16", "float16", "auto"):
        raise ValueError(f"torch_dtype must be float32, bfloat16, float16 or auto (got {dtype!r})")
    return name


def _device(device: Any, model: Any) -> torch.device:
    """transformers' conventions: None the first GPU if there is one (or where a device map put the model), -1
    the CPU, n GPU n, or a name."""
    if getattr(model, "hf_device_map", None):
        return next(model.parameters()).device
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device(f"cuda:{device}")
    return torch.device(device)


def _load_folder(name: str, tokenizer: str | None, dtype: str, answer_head: str, trust_remote_code: bool,
                 token: str | None, revision: str, cache_dir: str | None) -> tuple[Any, Any, SpanHead]:
    """qa.py's loading (adapter folders on their base, the checks of folders, tokenizers and answer heads)."""
    model_args = SimpleNamespace(
        model_name_or_path=name, config_name=None, tokenizer_name=tokenizer, cache_dir=cache_dir,
        model_revision=revision, token=token, trust_remote_code=trust_remote_code, torch_dtype=dtype,
        attn_implementation=None, answer_head=answer_head, allow_untrained_head=False, start_n_top=None,
        end_n_top=None, load_in_4bit=False, load_in_8bit=False, lora_r=None, merge_lora=False)
    model, tok, head = load_model(model_args, _ANSWERING)
    return with_adapters(model, model_args, _ANSWERING, head.generative), tok, head


def _given_objects(model: Any, tokenizer: Any, answer_head: str, head: SpanHead | None) -> tuple[Any, Any, SpanHead]:
    """A loaded model (its head told by its class, whatever its config says it was saved as) and/or a loaded
    tokenizer, as transformers 4.x took them."""
    if tokenizer is None or isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer or model.config.name_or_path)
    if head is None:
        as_built = copy.copy(model.config)
        as_built.architectures = [type(model).__name__]
        head = resolve_head(as_built, answer_head, False)
    prepare_model(model, tokenizer, generative=head.generative)
    return model, tokenizer, head


def _load_onnx(folder: Any, int8: bool) -> tuple[Any, Any, SpanHead]:
    """An export of `python -m qakit.onnx` (a span head) run by onnxruntime."""
    from transformers import AutoTokenizer

    from qakit.onnx import OnnxQAModel

    if not isinstance(folder, str):
        raise ValueError("backend='onnxruntime' takes the folder `python -m qakit.onnx` wrote")
    model = OnnxQAModel.load(folder, int8=int8)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prepare_model(model, tokenizer)
    return model, tokenizer, SpanHead()


# what answering needs of qa.py's training flags: no training, generation by the checkpoint's own settings
_ANSWERING = SimpleNamespace(do_train=False, predict_with_generate=False, deepspeed=None, fsdp=None,
                             generation_config=None, generation_num_beams=None, generation_max_length=None)


# --------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------


@dataclass
class AskedSet:
    """The questions of one call with their windows, as the heads' answer assembly reads an evaluation set."""

    ids: list[str]
    contexts: list[str]
    windows: WindowIndex
    rows: list[dict[str, Any]]  # each window's model columns

    @classmethod
    def build(cls, questions: list[Question], family: QAFamily, head: SpanHead, s: CallSettings) -> "AskedSet":
        examples = {"id": [str(i) for i in range(len(questions))], "question": [q.question for q in questions],
                    "context": [q.context for q in questions]}
        indices = list(range(len(questions)))
        if head.text_inputs is not None:
            columns = generative.prepare_eval_features(examples, indices, family, head.text_inputs)
        else:
            columns = prepare_eval_features(examples, indices, family, s.max_seq_len, s.doc_stride)
        n = len(columns["input_ids"])
        table = pa.table({k: columns[k] for k in ("offset_starts", "offset_ends", "example_index", "context_start")})
        rows = [{k: v[i] for k, v in columns.items()} | {"feature_index": i} for i in range(n)]
        return cls(examples["id"], examples["context"], WindowIndex.from_features(table), rows)


class QuestionAnsweringPipeline:
    """transformers 4.x's QuestionAnsweringPipeline calls, answered as qa.py answers (module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, head: SpanHead, device: torch.device, model_dir: str | None,
                 defaults: CallSettings):
        self.model, self.tokenizer, self.head, self.device = model.eval(), tokenizer, head, device
        self.model_dir, self.defaults = model_dir, defaults
        self._prepared: dict[tuple, tuple[QAFamily, SpanHead]] = {}

    def settings(self, **overrides: Any) -> CallSettings:
        """This pipeline's defaults with a call's arguments."""
        return CallSettings.given(self.defaults, **overrides)

    def check(self, settings: CallSettings) -> None:
        """Window settings this model cannot take, refused before any question is asked (the server checks at
        start, not on every request)."""
        self._prepare(self._resolved(settings))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`qa(question=..., context=...)`, `qa({"question", "context"})`, lists of either: one input gives its
        answer (a dict, or a list for several answers), several give a list of those."""
        call = {k: kwargs.pop(k) for k in ("question", "context", "X", "data") if k in kwargs}
        settings = self.settings(**kwargs)
        if len(args) == 1 and isinstance(args[0], Iterator):  # a generator: answers as they come, as 4.x gave them
            return (self(item, **kwargs) for item in args[0])
        questions = parse_inputs(args, call)
        answers = self.answer(questions, settings)
        shaped = [found[0] if len(found) == 1 else found for found in answers]
        return shaped[0] if len(shaped) == 1 else shaped

    def answer(self, questions: list[Question], settings: CallSettings) -> list[list[dict[str, Any]]]:
        """Each question's answers, best first, at most `top_k`: score, start, end, answer, null_odds."""
        for q in questions:
            check_question(q)
        if not questions:
            return []
        s = self._resolved(settings)
        family, head = self._prepare(s)
        answering = AnswerSettings(_per_window(s), s.max_answer_len, True, self._threshold(s),
                                   every_pair=s.threshold is None)
        asked = AskedSet.build(questions, family, head, s)
        arrays = self._forward(asked, family, head, answering, s.batch_size)
        preds = head.answer(arrays, asked, answering, self.tokenizer)  # qa.py's assembly: its answers, null odds
        words = _words(family, asked.contexts) if s.align_to_words else None
        if s.threshold is None:
            rows = head.rows(arrays, asked, self.tokenizer)
            return pipeline_answers(rows, head.log_norm(arrays), asked, preds, s, words)
        return assembled_answers(preds, asked, s, words)

    def _resolved(self, s: CallSettings) -> CallSettings:
        """transformers' defaults that depend on the tokenizer."""
        max_seq_len = s.max_seq_len or min(int(getattr(self.tokenizer, "model_max_length", 384) or 384), 384)
        doc_stride = s.doc_stride if s.doc_stride is not None else min(max_seq_len // 2, 128)
        return dataclasses.replace(s, max_seq_len=max_seq_len, doc_stride=doc_stride).checked()

    def _prepare(self, s: CallSettings) -> tuple[QAFamily, SpanHead]:
        """The model family and head for these window settings, detected once."""
        key = (s.max_seq_len, s.doc_stride, s.max_answer_len, s.n_best_size)
        if key not in self._prepared:
            family = QAFamily.detect(self.model, self.tokenizer, s.max_seq_len)
            data = SimpleNamespace(max_seq_length=s.max_seq_len, doc_stride=s.doc_stride, n_best_size=s.n_best_size,
                                   max_answer_length=s.max_answer_len, val_max_answer_length=None)
            self._prepared[key] = family, self.head.prepare(family, self.model, data, _ANSWERING)
        return self._prepared[key]

    def _threshold(self, s: CallSettings) -> float:
        """The number qa.py's decision compares the null odds with ("model": the folder's record)."""
        if s.threshold != "model":
            return float(s.threshold or 0.0)
        if self.model_dir is None:
            raise QAInputError("threshold='model' reads the threshold a model folder records: load the pipeline "
                               "from the folder (model=DIR), or pass a number")
        return recorded_threshold(self.model_dir)

    def _forward(self, asked: AskedSet, family: QAFamily, head: SpanHead, answering: AnswerSettings,
                 batch_size: int) -> tuple[np.ndarray, ...]:
        """Every window's candidates in window order, batched longest first (less padding)."""
        data = SimpleNamespace(max_seq_length=0, pad_to_max_length=False, ignore_pad_token_for_loss=True)
        collate = head.collator(family, data)
        order = sorted(range(len(asked.rows)), key=lambda i: -len(asked.rows[i]["input_ids"]))
        parts, index = [], []
        for lo in range(0, len(order), batch_size):
            batch = collate([asked.rows[i] for i in order[lo:lo + batch_size]])
            meta = {k: v.to(self.device) for k, v in batch.pop("qa_meta").items()}
            inputs = {k: v.to(self.device) for k, v in batch.items()}
            if "p_mask" in inputs:  # the beam head's mask in the model's dtype
                inputs["p_mask"] = inputs["p_mask"].to(self.model.dtype)
            with torch.inference_mode():
                found = head.device_candidates(self.model, inputs, meta, answering)
            parts.append([x.cpu().numpy() for x in found])
            index.append(meta["feature_index"].cpu().numpy())
        return restore_order((np.concatenate(index), *(np.concatenate(c) for c in zip(*parts))), len(asked.rows))


def _per_window(s: CallSettings) -> int:
    """Candidates each window gives: transformers' 2 top_k + 10 (top_k without word alignment); qa.py's
    n_best_size with a threshold."""
    if s.threshold is not None:
        return max(s.n_best_size, s.top_k)
    return 2 * s.top_k + 10 if s.align_to_words else s.top_k


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def parse_inputs(args: tuple, call: dict[str, Any]) -> list[Question]:
    """transformers 4.x's argument conventions: positional dicts (or a question and a context), `X`/`data`,
    or `question=`/`context=` (a list of either pairs with the other, or with a single other)."""
    if "question" in call or "context" in call:
        if "question" not in call or "context" not in call:
            raise QAInputError("pass both question= and context=")
        q, c = call["question"], call["context"]
        if isinstance(q, list) and isinstance(c, list):
            if len(q) != len(c):
                raise QAInputError(f"question= has {len(q)} items and context= {len(c)}: pass as many of each")
            return [Question(a, b) for a, b in zip(q, c)]
        if isinstance(q, list):
            return [Question(a, c) for a in q]
        if isinstance(c, list):
            return [Question(q, b) for b in c]
        return [Question(q, c)]
    if "X" in call or "data" in call:
        args = (call.get("X", call.get("data")),)
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        return [Question(args[0], args[1])]
    items: Iterable = args[0] if len(args) == 1 else args
    if isinstance(items, dict) or not isinstance(items, Iterable) or isinstance(items, str):
        items = [items]
    return [_question(item) for item in items]


def _question(item: Any) -> Question:
    """One input in any of the shapes transformers 4.x took."""
    if isinstance(item, Question):
        return item
    if isinstance(item, dict):
        if "question" not in item or "context" not in item:
            raise QAInputError(f"an input needs the keys question and context (got {sorted(item)})")
        return Question(item["question"], item["context"], item.get("id"))
    if hasattr(item, "question_text") and hasattr(item, "context_text"):  # transformers' SquadExample
        return Question(item.question_text, item.context_text)
    raise QAInputError(f"an input is a dict with question and context (got {type(item).__name__})")


def check_question(q: Question) -> None:
    """transformers' refusals of empty texts (and ours of blank ones: they have no tokens to answer from)."""
    for name in ("question", "context"):
        value = getattr(q, name)
        if not isinstance(value, str):
            raise QAInputError(f"`{name}` must be a string (got {type(value).__name__})")
        if not value.strip():
            raise QAInputError(f"`{name}` cannot be empty")


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def _aligned(words: list[np.ndarray] | None, question: int, start: int, end: int) -> tuple[int, int]:
    """The span widened to whole words: the word its first character is in, to the word its last is in."""
    if words is None or end <= start or not len(words[question]):
        return start, end
    spans = words[question]
    first = max(int(np.searchsorted(spans[:, 0], start, side="right")) - 1, 0)
    last = max(int(np.searchsorted(spans[:, 0], end - 1, side="right")) - 1, 0)
    return int(spans[first, 0]), int(spans[last, 1])


def _words(family: QAFamily, contexts: list[str]) -> list[np.ndarray]:
    """Each question's context's words, found once per distinct context."""
    seen: dict[str, np.ndarray] = {}
    return [seen[c] if c in seen else seen.setdefault(c, family.words(c)) for c in contexts]


def _null_odds(preds: QAPredictions, qid: str) -> float | None:
    """qa.py's null odds; None where there are none (no span found: qa.py writes its stand-in, 1e9)."""
    odds = preds.null_odds.get(qid)
    return None if odds is None or not np.isfinite(odds) or odds == NO_SPAN_ODDS else float(odds)


def pipeline_answers(rows: CandidateRows, log_norm: np.ndarray, asked: AskedSet, preds: QAPredictions,
                     s: CallSettings, words: list[np.ndarray] | None) -> list[list[dict[str, Any]]]:
    """transformers 4.x's answers: window probabilities, equal texts added up, the null answer by its least
    window probability (with handle_impossible_answer), the top_k best."""
    example = asked.windows.example_index
    if rows.null_is_odds:  # the beam head's answerability logit: its probability of no answer
        null_p = 1.0 / (1.0 + np.exp(-rows.null_score))
    else:
        null_p = np.exp(rows.null_score - log_norm)
    least_null = np.full(len(asked.ids), np.inf)
    np.minimum.at(least_null, example, null_p)
    prob = np.exp(rows.score - log_norm[rows.window])
    if rows.texts is None:
        starts, ends = asked.windows.chars(rows.window, rows.start_token, rows.end_token)
        first = asked.windows.context_start[rows.window]  # a word cut by the window's edge ends there, as in 4.x
        lo, hi = asked.windows.chars(rows.window, first, first + asked.windows.length[rows.window] - 1)
    else:
        starts, ends = rows.char_start, rows.char_end
    found: list[dict[str, dict[str, Any]]] = [{} for _ in asked.ids]
    for r, w in enumerate(rows.window.tolist()):
        e = int(example[w])
        if rows.texts is None:  # a span of the context, widened to words (those of its window)
            start, end = _aligned(words, e, int(starts[r]), int(ends[r]))
            start, end = max(start, int(lo[r])), min(end, int(hi[r]))
            text = asked.contexts[e][start:end]
        else:  # a generated answer, where it occurs (as written: it need not be whole words)
            start, end, text = int(starts[r]), int(ends[r]), rows.texts[r]
        same = found[e].get(text.lower())
        if same is not None:
            same["score"] += float(prob[r])
        else:
            found[e][text.lower()] = {"score": float(prob[r]), "start": start if start >= 0 else None,
                                      "end": end if end >= 0 else None, "answer": text}
    out = []
    for e, qid in enumerate(asked.ids):
        answers = list(found[e].values())
        if s.handle_impossible_answer and np.isfinite(least_null[e]):
            answers.append({"score": float(least_null[e]), "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:s.top_k]
        out.append([a | {"null_odds": _null_odds(preds, qid)} for a in answers])
    return out


def assembled_answers(preds: QAPredictions, asked: AskedSet, s: CallSettings,
                      words: list[np.ndarray] | None) -> list[list[dict[str, Any]]]:
    """qa.py's answers: its prediction first ("" when the null odds are above the threshold), then the rest of
    its n-best list; `score` is the n-best probability."""
    nbest = preds.nbest_dict()
    out = []
    for e, qid in enumerate(asked.ids):
        rows = nbest.get(qid, [])
        chosen = preds.predictions[qid]
        first = next((r for r in rows if (r["text"] == "") == (chosen == "")), None)
        if first is None and chosen == "":  # the beam head's n-best has no null row: its odds are a logit
            first = {"text": "", "offsets": [0, 0], "probability": float(1 / (1 + np.exp(-preds.null_odds[qid])))}
        ordered = ([first] if first is not None else []) + [r for r in rows if r is not first]
        answers = []
        for row in ordered[:s.top_k]:
            start, end = row.get("offsets") or [None, None]
            text = row["text"]
            if "start_logit" in row and text:  # a span of the context (not generated), widened to words
                start, end = _aligned(words, e, start, end)
                text = asked.contexts[e][start:end]
            answers.append({"score": row["probability"], "start": start, "end": end, "answer": text,
                            "null_odds": _null_odds(preds, qid)})
        out.append(answers)
    return out
