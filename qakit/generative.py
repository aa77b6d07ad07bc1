"""Generative (sequence-to-sequence) QA: an encoder-decoder reads `question: Q context: C` and writes the answer.

The input text is HF's run_seq2seq_qa.py's, token for token when the context fits. Where it does not, the
context is cut into windows of `max_seq_length` tokens overlapping by `doc_stride` (HF's script truncates
and loses every answer past the cut): a training window's target is the answer when the window holds it
and the empty answer when it does not. At evaluation each window generates its best non-empty answers
(beam search keeps `num_return` of them) and every answer, and the empty one, is scored by the model's own
log-probability of the whole target sequence, so answers from different windows compare, and
`empty answer score - best answer score` is a real null odds, in the units of a span head's.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from qakit.answers import CandidateRows
from qakit.errors import QAConfigError
from qakit.family import QAFamily
from qakit.template import probe_single
from qakit.windows import WindowIndex, context_windows


def source_text(question: str, context: str) -> tuple[str, int, int, int]:
    """HF's input text, with where the question ends, where the context starts in it, and how many leading
    characters of the context the text left out (HF strips them)."""
    q, c = question.lstrip(), context.lstrip()
    text = " ".join(["question:", q, "context:", c])
    return text, len("question: ") + len(q), len(text) - len(c), len(context) - len(c)


@dataclass(frozen=True)
class TextInputs:
    """How windows are framed for this tokenizer, and what the empty answer is as a target."""

    prefix: tuple[int, ...]  # special tokens before the text (BART: <s>; T5: none)
    suffix: tuple[int, ...]  # and after it (</s>)
    empty_answer: tuple[int, ...]  # target ids of "" (T5: </s>; BART: <s> </s>)
    max_seq_length: int
    doc_stride: int
    max_answer_length: int

    @classmethod
    def detect(cls, family: QAFamily, max_seq_length: int, doc_stride: int, max_answer_length: int) -> "TextInputs":
        prefix, suffix = probe_single(family.tokenizer, family._call)
        empty = tuple(family.tokenizer(text_target="")["input_ids"])
        inputs = cls(prefix, suffix, empty, max_seq_length, doc_stride, max_answer_length)
        if inputs.question_room < 1:
            raise QAConfigError(f"--max_seq_length {max_seq_length} leaves no room for context after the question "
                                f"and --doc_stride {doc_stride}: lower --doc_stride or raise --max_seq_length")
        return inputs

    @property
    def question_room(self) -> int:
        """Most tokens of `question: Q context:` that still leave `doc_stride` + 1 context tokens."""
        return self.max_seq_length - len(self.prefix) - len(self.suffix) - self.doc_stride - 1


def _cut_question(ids: list[int], n_question: int, n_marker: int, room: int) -> list[int]:
    """Keep the question's first tokens and the `context:` marker after it."""
    if n_question <= room:
        return ids[:n_question]
    keep = max(room - n_marker, 0)
    return ids[:keep] + ids[n_question - min(n_marker, room):n_question]


def text_windows(examples: dict[str, list], family: QAFamily, inputs: TextInputs) -> Iterator[tuple[int, list[int], int,
                                                                                               list[int], list[int]]]:
    """(example position, input ids, first context token, its context tokens' start and end characters)."""
    framed = [source_text(q, c) for q, c in zip(examples["question"], examples["context"])]
    for i, ((ids, starts, ends), (_, q_end, c_at, lead)) in enumerate(zip(family.encode([f[0] for f in framed]),
                                                                        framed)):
        n_question = bisect.bisect_left(starts, c_at)  # tokens before the context: `question: Q context:`
        n_marker = n_question - bisect.bisect_left(starts, q_end, 0, n_question)
        question = _cut_question(ids, n_question, n_marker, inputs.question_room)
        shift = lead - c_at  # text characters to context characters
        c_starts = [s + shift for s in starts[n_question:]]
        c_ends = [e + shift for e in ends[n_question:]]
        budget = inputs.max_seq_length - len(inputs.prefix) - len(inputs.suffix) - len(question)
        first = len(inputs.prefix) + len(question)
        for ws, we in context_windows(len(ids) - n_question, budget, inputs.doc_stride):
            window = [*inputs.prefix, *question, *ids[n_question + ws:n_question + we], *inputs.suffix]
            yield i, window, first, c_starts[ws:we], c_ends[ws:we]


def prepare_train_features(examples: dict[str, list], family: QAFamily, inputs: TextInputs) -> dict[str, list]:
    """Windows with their target: the answer where the window holds all of it, else the empty answer."""
    rows: dict[str, list] = {"input_ids": [], "length": []}
    targets = []
    for i, ids, _, starts, ends in text_windows(examples, family, inputs):
        answers = examples["answers"][i]
        target = ""
        if answers["text"] and starts:
            a_start = answers["answer_start"][0]
            if starts[0] <= a_start and a_start + len(answers["text"][0]) <= ends[-1]:
                target = answers["text"][0]
        rows["input_ids"].append(ids)
        rows["length"].append(len(ids))
        targets.append(target)
    rows["labels"] = list(family.tokenizer(text_target=targets, max_length=inputs.max_answer_length,
                                           truncation=True)["input_ids"]) if targets else []
    return rows


def prepare_eval_features(examples: dict[str, list], indices: list[int], family: QAFamily,
                          inputs: TextInputs) -> dict[str, list]:
    """Windows that remember their question and where their context tokens sit in the text."""
    rows: dict[str, list] = {k: [] for k in ("input_ids", "context_start", "example_index", "offset_starts",
                                             "offset_ends")}
    for i, ids, first, starts, ends in text_windows(examples, family, inputs):
        for key, value in zip(rows, (ids, first, indices[i], starts, ends)):
            rows[key].append(value)
    return rows


# --------------------------------------------------------------------------------------------
# Generating and scoring answers (on the device, inside the evaluation loop)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """HF's seq2seq flags: --generation_num_beams, --generation_max_length / --val_max_answer_length."""

    num_beams: int
    num_return: int  # answers kept per window: min(n_best_size, num_beams)
    max_new_tokens: int
    empty_answer: tuple[int, ...]
    eos_token_id: int


def _after_first(seqs: torch.Tensor, token: int) -> torch.Tensor:
    """Positions after the first `token` of each row (what generate pads with)."""
    hit = (seqs == token).int()
    return (hit.cumsum(1) - hit) > 0


def generated_candidates(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, s: GenerationSettings,
                         synced_gpus: bool = False) -> tuple[torch.Tensor, ...]:
    """Each window's best non-empty answers and its empty answer, scored by the model's log-probability.

    Generation may not end before the empty answer's end of sequence (`min_new_tokens`), so it gives the
    best answers that are not the empty one; an answer cut at `max_new_tokens` still ends with it, as
    truncated training targets do. Every answer and the empty one are then scored by teacher forcing the
    tokens exactly as generated (from the decoder start token generate used), in one decoder pass over
    encoder states computed once. Returns (answer tokens [B, R, max_new_tokens], -100 after each answer's
    end; answer scores [B, R]; empty-answer score [B]; nonfinite [B]), scores as float64 sums of
    log-probabilities. `synced_gpus`: every process keeps stepping until all are done (sharded models).
    """
    b, r = input_ids.shape[0], s.num_return
    eos_at = s.empty_answer.index(s.eos_token_id) if s.eos_token_id in s.empty_answer else len(s.empty_answer) - 1
    empty_answer = s.empty_answer[:eos_at + 1]  # what generation can produce: nothing after the end of sequence
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    states = encoded.last_hidden_state  # generate() expands `encoded` in place for its beams
    generated = model.generate(encoder_outputs=encoded, attention_mask=attention_mask, num_beams=s.num_beams,
                               num_return_sequences=r, max_new_tokens=s.max_new_tokens,
                               min_new_tokens=len(empty_answer), forced_eos_token_id=s.eos_token_id,
                               do_sample=False, synced_gpus=synced_gpus)
    answers = generated[:, 1:]  # after the decoder's start token
    if answers.shape[1] > s.max_new_tokens:
        raise RuntimeError(f"generate() returned {answers.shape[1]} new tokens for max_new_tokens {s.max_new_tokens}")
    answers = answers.masked_fill(_after_first(answers, s.eos_token_id), -100)
    empty = torch.tensor(empty_answer, device=input_ids.device).expand(b, -1)
    width = max(answers.shape[1], empty.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-100)  # noqa: E731
    targets = torch.cat([pad(answers).view(b, r, width), pad(empty)[:, None]], 1).view(b * (r + 1), width)
    start = generated[:1, :1].expand(b * (r + 1), 1)
    previous = targets[:, :-1].masked_fill(targets[:, :-1] < 0, model.config.pad_token_id or 0)
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=states.repeat_interleave(r + 1, 0)),
                attention_mask=attention_mask.repeat_interleave(r + 1, 0),
                decoder_input_ids=torch.cat([start, previous], 1))
    logp = out.logits.float().log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    scores = logp.masked_fill(targets < 0, 0).double().sum(1).view(b, r + 1)
    # a fixed width, so that batches (and processes) gather into one array
    tokens = torch.nn.functional.pad(answers, (0, s.max_new_tokens - answers.shape[1]), value=-100)
    return tokens.view(b, r, s.max_new_tokens), scores[:, :r], scores[:, r], ~torch.isfinite(scores).all(1)


@dataclass
class Generated:
    """Every window's generated answers, gathered from all processes, in window order."""

    tokens: np.ndarray  # [N, R, T] token ids, negative = none
    scores: np.ndarray  # [N, R] float64
    null_score: np.ndarray  # [N] log-probability of the empty answer
    nonfinite: np.ndarray  # [N] bool

    @classmethod
    def from_arrays(cls, arrays: tuple[np.ndarray, ...]) -> "Generated":
        tokens, scores, null, nonfinite = arrays
        return cls(tokens.astype(np.int64, copy=False), scores.astype(np.float64, copy=False),
                   null.astype(np.float64, copy=False), nonfinite.astype(bool, copy=False))


def decode_answers(tokenizer: Any, tokens: np.ndarray) -> list[str]:
    """One text per (window, answer), in row-major order; edge whitespace removed, as for spans."""
    flat = tokens.reshape(-1, tokens.shape[-1]).tolist()
    return [t.strip() for t in tokenizer.batch_decode([[i for i in row if i >= 0] for row in flat],
                                                     skip_special_tokens=True)]


def _offsets(context: str, text: str, window: tuple[int, int]) -> tuple[int, int]:
    """Where the answer appears in its window's part of the context, if it does (it need not): (-1, -1)."""
    at = context.find(text, *window)
    return (at, at + len(text)) if at >= 0 else (-1, -1)


def generated_rows(contexts: list[str], windows: WindowIndex, gen: Generated, tokenizer: Any) -> CandidateRows:
    """Every window's generated answers as rows for the assembly of answers (`qakit.answers`): non-empty,
    finite, and one row per distinct text of a question (its best score; ties to the earlier window and beam,
    and the text ranks among equal scores where it first appeared). The null score is the empty answer's."""
    texts = decode_answers(tokenizer, gen.tokens)
    r = gen.scores.shape[1]
    found: dict[tuple[int, str], int] = {}  # (question, text) -> its row
    first_seen: dict[tuple[int, str], int] = {}
    rows: list[tuple[int, float, str]] = []
    for w, e in enumerate(windows.example_index.tolist()):
        for k in range(r):
            text, score = texts[w * r + k], float(gen.scores[w, k])
            if not (text and math.isfinite(score)):
                continue
            key = (e, text)
            first_seen.setdefault(key, w * r + k)
            if key not in found or score > rows[found[key]][1]:
                found[key] = len(rows)
                rows.append((w, score, text))
    kept = sorted(found.values())
    window = np.array([rows[i][0] for i in kept], dtype=np.int64)
    picked = [rows[i][2] for i in kept]
    spans = [_window_span(windows, w) for w in window.tolist()]
    offsets = np.array([_offsets(contexts[e], t, s) for e, t, s in
                        zip(windows.example_index[window].tolist(), picked, spans)], dtype=np.int64).reshape(-1, 2)
    tie = np.array([first_seen[(e, t)] for e, t in zip(windows.example_index[window].tolist(), picked)],
                   dtype=np.int64)
    return CandidateRows(window=window, score=np.array([rows[i][1] for i in kept], dtype=np.float64),
                         null_score=gen.null_score, texts=picked, char_start=offsets[:, 0], char_end=offsets[:, 1],
                         tie=tie)


def _window_span(windows: WindowIndex, w: int) -> tuple[int, int]:
    """The characters a window's context tokens cover."""
    starts, ends = windows.offsets(w)
    return (int(starts[0]), int(ends[-1])) if len(starts) else (0, 0)


def generation_settings(training_args: Any, data_args: Any, text_inputs: TextInputs, model: Any,
                        tokenizer: Any) -> GenerationSettings:
    """HF's precedence: --generation_num_beams, else the checkpoint's generation config's num_beams; answer
    length --generation_max_length, else --val_max_answer_length, else --max_answer_length (in new tokens:
    HF's max_length also counts the decoder's start token)."""
    if training_args.generation_config is not None:
        raise QAConfigError("--generation_config is not supported: answers are generated with --generation_num_beams "
                            "and --generation_max_length (the checkpoint's own generation config does the rest)")
    own = getattr(getattr(model, "generation_config", None), "num_beams", None)
    beams = training_args.generation_num_beams or own or 1
    if beams < 1:
        raise QAConfigError(f"--generation_num_beams must be at least 1 (got {beams})")
    length = training_args.generation_max_length or data_args.val_max_answer_length or data_args.max_answer_length
    return GenerationSettings(num_beams=beams, num_return=min(data_args.n_best_size, beams), max_new_tokens=length,
                              empty_answer=text_inputs.empty_answer, eos_token_id=tokenizer.eos_token_id)
