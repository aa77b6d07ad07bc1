"""Self-check of tests/tiny_models.py: build every row, load it through the Auto classes, encode a
(question, context) pair, and run one training step; print one line of facts per architecture.

Usage: python tests/check_tiny_models.py [NAME ...]
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import FIXED_SEQ_LEN, ROW_BY_NAME, ROWS, build_tiny  # noqa: E402

QUESTIONS = ["Who wrote in his journal about the storms?", "How many seats does the hall have?"]
CONTEXTS = [
    "In 1874 the keeper, a careful man named Thomas Reed, wrote in his journal that the winter storms had "
    "broken three windows and flooded the lower room.",
    "The hall has 240 seats, large windows facing the park, and a small cafe near the entrance.",
]
ANSWERS = ["Thomas Reed", "240"]
MAX_LENGTH = 128
# forward() parameters every QA model shares; anything else is reported as an extra input.
COMMON_PARAMS = {
    "self", "input_ids", "attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds",
    "start_positions", "end_positions", "output_attentions", "output_hidden_states", "return_dict", "kwargs",
    "decoder_input_ids", "decoder_attention_mask", "decoder_head_mask", "cross_attn_head_mask",
    "encoder_outputs", "decoder_inputs_embeds", "use_cache", "past_key_values", "cache_position",
}
DUMMY_BOX = [0, 0, 0, 0]
DUMMY_XPATH = "/html/body/p"


@dataclass
class Report:
    name: str
    status: str = "OK"
    tokenizer: str = "-"
    fast: str = "-"
    offsets: str = "-"
    special_mask: str = "-"
    padding_side: str = "-"
    input_names: str = "-"
    cls_index: str = "-"
    template: str = "-"
    call: str = "(q, c)"
    extras: list[str] = field(default_factory=list)
    mask_tti: str = "-"
    length: str = "-"
    seconds: float = 0.0


def pair_arguments(tok: Any, questions: list[str], contexts: list[str]) -> tuple[tuple, dict, str]:
    """(args, kwargs, description) for encoding (question, context) pairs the way the tokenizer's __call__ demands.

    Layout tokenizers want pre-split words plus one box per word, MarkupLM nodes plus one xpath per node:
    passing the whole context as a single word/node keeps offsets relative to the context string.
    """
    params = inspect.signature(tok.__call__).parameters
    one_piece = (questions, [[c] for c in contexts])
    if "boxes" in params:
        return one_piece, {"boxes": [[DUMMY_BOX] for _ in contexts]}, f"(q, [c], boxes=[{DUMMY_BOX}])"
    if "xpaths" in params:
        return one_piece, {"xpaths": [[DUMMY_XPATH] for _ in contexts]}, f"(q, [c], xpaths=['{DUMMY_XPATH}'])"
    return (questions, contexts), {}, "(q, c)"


def encode(tok: Any, questions: list[str], contexts: list[str], **kwargs: Any) -> Any:
    args, extra, _ = pair_arguments(tok, questions, contexts)
    return tok(*args, **extra, **kwargs)


def template(tok: Any, enc: Any, index: int) -> str:
    """The pair layout, e.g. "[CLS] A [SEP] B [SEP]": special tokens literally, question/context as A/B."""
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][index])
    specials = enc["special_tokens_mask"][index]
    if tok.is_fast:
        roles = [None if s is None else "AB"[s] for s in enc.sequence_ids(index)]
    else:  # slow tokenizers have no sequence_ids(): each run of non-special tokens is the next segment
        roles, segment = [], -1
        for position, special in enumerate(specials):
            if not special and (position == 0 or specials[position - 1]):
                segment += 1
            roles.append(None if special else "AB"[min(segment, 1)])
    parts: list[str] = []
    for token, role in zip(tokens, roles, strict=True):
        part = role or (token if token.isprintable() else f"U+{ord(token):04X}")
        if not (role and parts and parts[-1] == role):
            parts.append(part)
    return " ".join(parts)


def answer_positions(enc: Any, index: int) -> tuple[int, int]:
    """Token span of ANSWERS[index] found via offsets; without offsets any in-range span (1, 2) will do."""
    if "offset_mapping" in enc:
        context = CONTEXTS[index]
        start_char = context.index(ANSWERS[index])
        end_char = start_char + len(ANSWERS[index])
        roles = enc.sequence_ids(index)
        hits = [
            i for i, ((s, e), r) in enumerate(zip(enc["offset_mapping"][index], roles, strict=True))
            if r == 1 and s < end_char and e > start_char
        ]
        if hits:
            return hits[0], hits[-1]
    return 1, 2


def extra_inputs(model: Any, config: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Dummy values for required inputs the tokenizer does not produce, by forward() parameter name."""
    params = inspect.signature(model.forward).parameters
    size, length = batch["input_ids"].shape
    extras: dict[str, torch.Tensor] = {}
    if "bbox" in params and "bbox" not in batch:
        extras["bbox"] = torch.zeros(size, length, 4, dtype=torch.long)
    if "visual_feats" in params:
        extras["visual_feats"] = torch.zeros(size, 4, config.visual_feat_dim)
        extras["visual_pos"] = torch.zeros(size, 4, config.visual_pos_dim)
    if "lang_ids" in params and getattr(config, "default_language", None) is None:
        extras["lang_ids"] = torch.zeros(size, dtype=torch.long)
    if "image" in params:
        extras["image"] = torch.zeros(size, 3, 224, 224)
    return extras


def train_step(model: Any, config: Any, batch: dict[str, torch.Tensor], spans: list[tuple[int, int]]) -> None:
    """Forward + backward with span labels (classification labels for heads without a span output)."""
    params = inspect.signature(model.forward).parameters
    inputs = {k: v for k, v in batch.items() if k in params}
    inputs.update(extra_inputs(model, config, batch))
    if "start_positions" in params:
        inputs["start_positions"] = torch.tensor([s for s, _ in spans])
        inputs["end_positions"] = torch.tensor([e for _, e in spans])
    else:
        inputs["labels"] = torch.zeros(len(spans), dtype=torch.long)
    model.train()
    loss = model(**inputs).loss
    loss.backward()
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
        raise RuntimeError("no gradient reached the parameters")


def encoding_kwargs(offsets: bool, **extra: Any) -> dict[str, Any]:
    return dict(
        truncation="only_second", max_length=MAX_LENGTH, return_special_tokens_mask=True,
        return_token_type_ids=True, return_offsets_mapping=offsets, **extra,
    )


def inspect_tokenizer(tok: Any, report: Report) -> Any:
    """Fill the tokenizer facts; return the single-pair encoding used for them."""
    report.tokenizer = type(tok).__name__
    report.fast = "fast" if tok.is_fast else "slow"
    report.padding_side = tok.padding_side
    report.input_names = ",".join(tok.model_input_names)
    report.call = pair_arguments(tok, QUESTIONS[:1], CONTEXTS[:1])[2]
    try:
        enc = encode(tok, QUESTIONS[:1], CONTEXTS[:1], **encoding_kwargs(True))
        report.offsets = "yes" if "offset_mapping" in enc else "NO(silently omitted)"
    except NotImplementedError:
        enc = encode(tok, QUESTIONS[:1], CONTEXTS[:1], **encoding_kwargs(False))
        report.offsets = "NO(raises)"
    report.special_mask = "yes" if any(enc["special_tokens_mask"][0]) else "all-0"
    first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    ids = enc["input_ids"][0]
    report.cls_index = str(ids.index(first)) if first in ids else "absent"
    report.template = template(tok, enc, 0)
    return enc


def ensure_pad_token(tok: Any) -> str:
    """Decoder-only style tokenizers lack a pad token; batching needs one (eos, else unk)."""
    if tok.pad_token is not None:
        return ""
    tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return f"pad:=({tok.pad_token});"


def run_model(tok: Any, config: Any, model: Any, report: Report) -> None:
    """A training step on a padded batch of two; on failure retry padded to FIXED_SEQ_LEN, then also without
    attention_mask, and report what each failed attempt said."""
    params = inspect.signature(model.forward).parameters
    report.extras = sorted(set(params) - COMMON_PARAMS)
    report.mask_tti = f"{'mask' if 'attention_mask' in params else 'NO-mask'}/" + (
        "tti" if "token_type_ids" in params else "no-tti"
    )
    notes = ensure_pad_token(tok)
    offsets = report.offsets == "yes"
    fixed = encoding_kwargs(offsets, padding="max_length") | {"max_length": FIXED_SEQ_LEN}
    attempts = [
        ("longest", encoding_kwargs(offsets, padding="longest"), True),
        (f"max_length={FIXED_SEQ_LEN}", fixed, True),
        (f"max_length={FIXED_SEQ_LEN} without attention_mask", fixed, False),
    ]
    for label, kwargs, with_mask in attempts:
        enc = encode(tok, QUESTIONS, CONTEXTS, **kwargs)
        spans = [answer_positions(enc, i) for i in range(len(QUESTIONS))]
        batch = {k: torch.tensor(v) for k, v in enc.items() if k not in ("offset_mapping", "special_tokens_mask")}
        if not with_mask:
            batch.pop("attention_mask")
        notes += drop_unusable_token_types(config, batch)
        try:
            train_step(model, config, batch, spans)
            report.length = notes + (f"len={batch['input_ids'].shape[1]}" if label == "longest" else f"needs {label}")
            return
        except Exception as error:  # noqa: BLE001 - the message is the finding
            notes += f"{label}: {type(error).__name__}: {str(error).splitlines()[0][:90]};"
    raise RuntimeError(notes)


def drop_unusable_token_types(config: Any, batch: dict[str, torch.Tensor]) -> str:
    """Segment ids beyond the model's type_vocab_size (1 for Yoso, Mra, ...) would index out of range."""
    types, size = batch.get("token_type_ids"), getattr(config, "type_vocab_size", None)
    if types is None or size is None or size > int(types.max()):
        return ""
    del batch["token_type_ids"]
    return f"tti dropped(type_vocab_size={size});"


def check(name: str, workdir: Path) -> Report:
    report = Report(name)
    row = ROW_BY_NAME[name]
    reason = row.unavailable_reason()
    if reason and row.removed_in_v5 and not hasattr(transformers, row.config_class_name):
        report.status = f"SKIP({reason})"
        return report
    start = time.perf_counter()
    try:
        dest = build_tiny(name, workdir / name)
        tok = AutoTokenizer.from_pretrained(dest)
        inspect_tokenizer(tok, report)
        config = AutoConfig.from_pretrained(dest)
        if reason:
            report.status = f"SKIP({reason}; config and tokenizer only)"
        else:
            model = AutoModelForQuestionAnswering.from_pretrained(dest)
            run_model(tok, config, model, report)
    except Exception as error:  # noqa: BLE001 - reported per row
        report.status = f"FAIL({type(error).__name__}: {str(error)[:300]})"
        if "-v" in sys.argv:
            traceback.print_exc()
    report.seconds = time.perf_counter() - start
    return report


def main(names: list[str]) -> int:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    names = names or [row.name for row in ROWS]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            r = check(name, Path(tmp))
            failures += r.status.startswith("FAIL")
            print(
                f"{r.name} | {r.status} | {r.tokenizer} {r.fast} | offsets={r.offsets} stm={r.special_mask} "
                f"| pad={r.padding_side} | {r.input_names} | cls@{r.cls_index} | {r.template} | call={r.call} "
                f"| extras={','.join(r.extras) or '-'} | {r.mask_tti} | {r.length} | {r.seconds:.1f}s",
                flush=True,
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if not a.startswith("-")]))
