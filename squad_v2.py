"""Read SQuAD-style extractive QA data from the hub or local files into one schema.

Every source (official nested JSON, HF's flat JSON, JSON Lines, MRQA 2019's JSON Lines, any of them
gzipped, or a hub dataset) goes through the same checks and comes out with the same columns, so training and
evaluation code never has to care where the data came from. Errors name the file,
the place in it and the fix, because a bad record deep in a 40 MB file is otherwise
found only by a crash hours into training.

    python squad_v2.py FILE [FILE...]   # summarise and check data files
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import itertools
import json
import logging
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import datasets
import pyarrow as pa
from datasets.exceptions import FileNotFoundDatasetsError
from huggingface_hub.errors import LocalEntryNotFoundError

from qakit.errors import QAConfigError, QAError
from qakit.evalsets import EvalEntry, eval_entries

logger = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence(
            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
        ),
        "is_impossible": datasets.Value("bool"),
    }
)
ROLES = ("train", "validation", "test")
FILE_OPTIONS = "--train_file/--validation_file/--test_file"
ACCEPTED_LAYOUTS = (
    'official SQuAD {"version", "data": [{"title", "paragraphs": [{"context", "qas": '
    '[{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}; '
    'flat {"data": [{"id", "title", "context", "question", '
    '"answers": {"text": [...], "answer_start": [...]}}]} or a JSON list of such records; '
    "JSON Lines with one such record per line; "
    'MRQA 2019 JSON Lines: a {"header": {"dataset", "split"}} line, then one {"context", "qas": [{"qid", '
    '"question", "detected_answers": [{"text", "char_spans": [[start, end]]}]}]} per line; '
    "any of them gzipped (.gz)"
)
_TYPE_NAMES = {str: "string", int: "integer", list: "list", dict: "object", bool: "true/false"}
_REQUIRED = object()
_INT32_END = 2**31  # FEATURES stores answer_start as int32
_GZIP_MAGIC = b"\x1f\x8b"

Kind = type | tuple[type, ...]
_Mismatch = tuple[str, str, str]  # an MRQA span's place, its detected answer's text, the context's text there


class SquadFormatError(QAError, ValueError):
    """Data that cannot be used as given; the message names the file, the place and the fix."""


class SquadHubError(SquadFormatError):
    """A hub dataset that cannot be loaded; a SquadFormatError so callers catch one type."""


@dataclass
class SquadReport:
    """What was read from one source, so a run can log what it actually used."""

    source: str
    layout: str
    version: str | None
    articles: int
    paragraphs: int
    questions: int
    unanswerable: int
    has_answers: bool
    longest_context: int
    problems: list[str] = field(default_factory=list)
    dropped_answers: int = 0
    dropped_questions: int = 0


@dataclass(slots=True)
class _Question:
    """One question as read, before the checks that need the whole source."""

    place: str
    id: str
    title: str
    context: str
    question: str
    answers: list[tuple[str, int]] | None  # None: the record has no "answers" at all
    is_impossible: bool


@contextmanager
def _reworded(before: str = "", after: str = "") -> Iterator[None]:
    """Add to errors raised deep inside what only the caller knows: the file or dataset, the question's id."""
    try:
        yield
    except SquadFormatError as err:
        raise type(err)(f"{before}{err}{after}") from None


def _kind_name(kind: Kind) -> str:
    """Name JSON types as a data author knows them, not as Python does."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TYPE_NAMES[k] for k in kinds)


def _check_type(value: Any, kind: Kind, place: str) -> Any:
    """Catch wrong types here, with a place, instead of as a TypeError far downstream."""
    if type(value) in (kind if isinstance(kind, tuple) else (kind,)):  # exact type: a bool is no integer
        return _check_encodable(value, place) if type(value) is str else value
    got = "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)
    wanted = _kind_name(kind)
    raise SquadFormatError(f"{place}: is a {got}; make it {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}")


def _check_encodable(text: str, place: str) -> str:
    """JSON can escape half of a UTF-16 pair ("\\ud800") and json reads it, but it is no character: UTF-8 cannot
    encode it, so tokenizers and every file written later would fail on it, far from here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SquadFormatError(
            f"{place}: \\u{ord(text[err.start]):04x} at character {err.start} is half of a UTF-16 surrogate pair, "
            "not a character (UTF-8 cannot encode it); write the character itself, or both halves of its pair"
        ) from None
    return text


def _field(record: dict, key: str, kind: Kind, place: str, default: Any = _REQUIRED) -> Any:
    """Get a field that must be there (or has a default), of the right type."""
    if key not in record:
        if default is _REQUIRED:
            raise SquadFormatError(f'{place}: no "{key}"; add a {_kind_name(kind)} "{key}" there')
        return default
    return _check_type(record[key], kind, f'{place}: "{key}"')


def _text(record: dict, key: str, place: str) -> str:
    """A context or question must have text: an empty one can only produce garbage."""
    value = _field(record, key, str, place)
    if not value.strip():
        raise SquadFormatError(f'{place}: empty "{key}"; give it text or remove the record')
    return value


def _answers(value: Any, place: str) -> list[tuple[str, int]]:
    """Official files list answer objects, flat ones hold parallel lists: both mean the same."""
    place = f"{place}.answers"
    if isinstance(value, dict):
        texts = _field(value, "text", list, place)
        starts = _field(value, "answer_start", list, place)
        if len(texts) != len(starts):
            raise SquadFormatError(
                f"{place}: {len(texts)} texts but {len(starts)} answer_start values; "
                "give one answer_start per text"
            )
        answers = [
            (_check_type(t, str, f"{place}.text[{k}]"), _check_type(s, int, f"{place}.answer_start[{k}]"))
            for k, (t, s) in enumerate(zip(texts, starts))
        ]
    else:
        answers = []
        for k, answer in enumerate(_check_type(value, list, place)):
            a_place = f"{place}[{k}]"
            _check_type(answer, dict, a_place)
            answers.append((_field(answer, "text", str, a_place), _field(answer, "answer_start", int, a_place)))
    return _check_offsets(answers, place)


def _check_offsets(answers: list[tuple[str, int]], place: str) -> list[tuple[str, int]]:
    """An answer_start beyond 32 bits points into no context and cannot be stored (FEATURES holds int32): refused
    in every role. One that only misses its text is the answer checks' to report (and drop from train)."""
    for k, (_, start) in enumerate(answers):
        if not -_INT32_END <= start < _INT32_END:
            raise SquadFormatError(
                f"{place}[{k}]: answer_start {start} is no character offset (no context is that long); give the "
                "offset in the context where the answer's text starts, counted from 0"
            )
    return answers


def _question(record: Any, place: str, paragraph: tuple[str, str] | None = None) -> _Question:
    """Read one question; a flat record (no `paragraph`) carries its own title and context. Without
    "is_impossible" (v1.1, flat) it means "has no answers". Errors found after its id name the id too."""
    _check_type(record, dict, place)
    qid = str(_field(record, "id", (str, int), place))
    with _reworded(after=f" (question id {qid})"):
        title, context = paragraph or (_field(record, "title", str, place, ""), _text(record, "context", place))
        answers = _answers(record["answers"], place) if "answers" in record else None
        stated = _field(record, "is_impossible", bool, place, None)
        if stated and answers:
            raise SquadFormatError(
                f'{place}: "is_impossible" is true but "answers" is not empty; '
                'move them to "plausible_answers" or set "is_impossible" to false'
            )
        return _Question(
            place=place,
            id=qid,
            title=title,
            context=context,
            question=_text(record, "question", place),
            answers=answers,
            is_impossible=stated if stated is not None else answers == [],
        )


def _official_questions(data: list) -> tuple[list[_Question], tuple[int, int]]:
    """Flatten the nested layout; also returns (articles, paragraphs) as nested, lost by flattening."""
    questions, paragraphs = [], 0
    for a, article in enumerate(data):
        place = f"data[{a}]"
        title = _field(_check_type(article, dict, place), "title", str, place, "")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, place)):
            p_place = f"{place}.paragraphs[{p}]"
            context = _text(_check_type(paragraph, dict, p_place), "context", p_place)
            qas = _field(paragraph, "qas", list, p_place)
            questions += [_question(qa, f"{p_place}.qas[{q}]", (title, context)) for q, qa in enumerate(qas)]
            paragraphs += 1
    return questions, (len(data), paragraphs)


def _read_text(path: str) -> str:
    """Read the file (decompressed when gzipped), turning OS, compression and encoding errors into messages with the
    fix. Line ends are read as text mode reads them (CR LF and a lone CR as LF), also in a decompressed file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise SquadFormatError(f"no such file; check the path given to {FILE_OPTIONS}") from None
    except OSError as err:
        raise SquadFormatError(f"cannot be read ({err.strerror}); give a readable JSON file") from None
    gzipped = path.endswith(".gz") or data.startswith(_GZIP_MAGIC)
    try:
        text = (_gunzip(data) if gzipped else data).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        where = f"byte {err.start}" + (" of the decompressed data" if gzipped else "")
        raise SquadFormatError(f"not UTF-8 text ({where}); save it as UTF-8 JSON") from None
    if not text.strip():
        raise SquadFormatError("the file is empty; give SQuAD JSON or JSON Lines")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _gunzip(data: bytes) -> bytes:
    """Decompress a whole .gz file; one cut short (an interrupted download or copy) or damaged is one line with the
    fix, not zlib's or gzip's traceback."""
    if data and not data.startswith(_GZIP_MAGIC):
        raise SquadFormatError(f"named .gz but not gzip-compressed (it starts with {data[:8]!r}); if it is plain "
                               "JSON or JSON Lines, remove .gz from its name, else download or copy it again")
    try:
        return gzip.decompress(data)
    except EOFError:
        problem = "is cut short (its data ends before the end of its compressed stream)"
    except (gzip.BadGzipFile, zlib.error) as err:
        problem = f"is damaged ({err})"
    raise SquadFormatError(f"the gzip file {problem}; download or copy it again, or give it uncompressed")


def _loads(text: str) -> Any:
    """json.loads, where the failures that are no JSONDecodeError (nesting deeper than Python's recursion limit; an
    integer of more digits than Python converts, sys.get_int_max_str_digits) are one line too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise SquadFormatError(
            f"nested too deeply to be read (over Python's recursion limit, {sys.getrecursionlimit()} levels of [ and "
            "{; a SQuAD file nests fewer than 10): it is no SQuAD file; check the path"
        ) from None
    except ValueError as err:
        if isinstance(err, json.JSONDecodeError):
            raise
        raise SquadFormatError(f"cannot be read as JSON ({err.args[0].split(';')[0]}): no SQuAD field holds such "
                               "a number; fix it") from None


def _is_json(text: str) -> bool:
    """Tell JSON Lines from a JSON document with trailing garbage."""
    try:
        _loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _jsonl_records(text: str) -> Iterator[tuple[str, Any]]:
    """One record per non-blank line, each tagged with its line number for messages, parsed as they are asked for
    (MRQA's lines carry token lists that, all parsed at once, take gigabytes). Lines end at "\n" only:
    str.splitlines would also break at U+2028, U+2029 and U+0085, which JSON leaves unescaped."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = _loads(line)
        except json.JSONDecodeError as err:
            raise SquadFormatError(
                f"line {number}: not valid JSON at column {err.colno} ({err.msg}); "
                "JSON Lines need one complete record per line"
            ) from None
        yield f"line {number}", record


def _parse_jsonl(text: str) -> list[tuple[str, Any]]:
    """Every record of JSON Lines, parsed."""
    return list(_jsonl_records(text))


def _parse_json(text: str) -> tuple[Any, bool]:
    """Parse JSON, or JSON Lines when the first line is a complete value; returns (value, is_jsonl), JSON Lines as
    an iterator of (place, record) that parses each line when it is reached."""
    try:
        return _loads(text), False
    except json.JSONDecodeError as err:
        first_line = text.lstrip().split("\n", 1)[0]
        if err.msg == "Extra data" and _is_json(first_line):
            return _jsonl_records(text), True
        raise SquadFormatError(
            f"not valid JSON at line {err.lineno}, column {err.colno} ({err.msg}); fix the file there"
        ) from None


def _describe(value: Any) -> str:
    """Say what the top level holds, for the unknown-layout message."""
    if isinstance(value, dict):
        keys = ", ".join(f'"{k}"' for k in list(value)[:6])
        return f"top level is an object with keys {keys}" if keys else "top level is an empty object"
    if isinstance(value, list):
        return "top level is a list of " + (_TYPE_NAMES.get(type(value[0]), "values") if value else "nothing")
    return f"top level is a {_TYPE_NAMES.get(type(value), type(value).__name__)}"


def _is_flat_record(value: Any) -> bool:
    """Flat records hold their own question and context; what else they need is checked per record."""
    return isinstance(value, dict) and ("question" in value or "context" in value)


def _is_mrqa(record: Any) -> bool:
    """MRQA's files open with a header line, and each line after it holds a context with its "qas"."""
    return isinstance(record, dict) and ("header" in record or "qas" in record and "context" in record)


def _mrqa_questions(lines: Iterable[tuple[str, Any]]) -> tuple[list[_Question], list[_Mismatch]]:
    """The questions of MRQA 2019 lines; a header line (also one between two files put together) names the dataset,
    which becomes the title of the questions after it. Also returns the spans whose text is not their answer's."""
    title, questions, mismatches = "", [], []
    for place, record in lines:
        if "header" in _check_type(record, dict, place):
            header = _field(record, "header", dict, place)
            title = _field(header, "dataset", str, f'{place}: "header"', "")
            continue
        context = _text(record, "context", place)
        for q, qa in enumerate(_field(record, "qas", list, place)):
            question, found = _mrqa_question(qa, f"{place}, qas[{q}]", (title, context))
            questions.append(question)
            mismatches += found
    return questions, mismatches


def _mrqa_question(qa: Any, place: str, paragraph: tuple[str, str]) -> tuple[_Question, list[_Mismatch]]:
    """One MRQA question read as a flat record: its qid is the id, each span of its detected answers an answer. MRQA
    has no unanswerable questions: one without detected answers has no valid answer (not "no answer")."""
    qid = _field(_check_type(qa, dict, place), "qid", str, place)
    record = {"id": qid, "is_impossible": False, **{key: qa[key] for key in ("question", "is_impossible") if key in qa}}
    mismatches = []
    if "detected_answers" in qa:  # like "answers" elsewhere: absent only in a predict-only file
        with _reworded(after=f" (question id {qid})"):
            record["answers"], mismatches = _mrqa_answers(qa["detected_answers"], paragraph[1], place)
    return _question(record, place, paragraph), mismatches


def _mrqa_answers(detected: Any, context: str, place: str) -> tuple[list[dict], list[_Mismatch]]:
    """One answer per character span, its text the context's own: a detected answer's "text" is the answer as
    MRQA's source gave it, which can differ from its span (in case, spacing, a hyphen: MRQA-Shared-Task-2019 issue
    11), while MRQA's token spans (what a model learns) follow the character spans. Returns the answers and the
    spans whose text differs."""
    answers, mismatches = [], []
    for d, found in enumerate(_check_type(detected, list, f"{place}.detected_answers")):
        d_place = f"{place}.detected_answers[{d}]"
        said = _field(_check_type(found, dict, d_place), "text", str, d_place, None)
        for s, span in enumerate(_field(found, "char_spans", list, d_place)):
            s_place = f"{d_place}.char_spans[{s}]"
            start, end = _mrqa_span(span, len(context), s_place)
            text = context[start:end + 1]
            answers.append({"text": text, "answer_start": start})
            if said is not None and said != text:
                mismatches.append((f"{s_place} [{start}, {end}]", said, text))
    return answers, mismatches


def _mrqa_span(span: Any, length: int, place: str) -> tuple[int, int]:
    """An inclusive [start, end] character span inside a context of `length` characters."""
    inclusive = "MRQA's spans include their last character: end = start + len(text) - 1"
    if len(_check_type(span, list, place)) != 2:
        raise SquadFormatError(f"{place}: {json.dumps(span)[:40]} is no [start, end] pair; give two offsets "
                               f"({inclusive})")
    start, end = (_check_type(value, int, f"{place}[{k}]") for k, value in enumerate(span))
    if end < start:
        raise SquadFormatError(f"{place}: [{start}, {end}] ends before it starts; give [start, end] with end >= "
                               f"start ({inclusive})")
    if start < 0 or end >= length:
        raise SquadFormatError(f"{place}: [{start}, {end}] is outside the context (its characters are 0 to "
                               f"{length - 1}); give offsets into this line's \"context\" ({inclusive})")
    return start, end


def _parse_layout(text: str) -> tuple[str, str | None, list[_Question], tuple[int, int] | None, list[_Mismatch]]:
    """Detect the layout from content; returns (layout, version, questions, nested shape or None, the MRQA spans
    whose text is not their answer's)."""
    value, is_jsonl = _parse_json(text)
    lines = value if is_jsonl else iter([("line 1", value)])
    first = next(lines)
    lines = itertools.chain([first], lines)
    if _is_mrqa(first[1]):
        questions, mismatches = _mrqa_questions(lines)
        return "mrqa", None, questions, None, mismatches
    if is_jsonl or _is_flat_record(value):
        return "jsonl", None, [_question(r, place) for place, r in lines], None, []
    if isinstance(value, list) and value and _is_flat_record(value[0]):
        return "flat", None, [_question(r, f"[{i}]") for i, r in enumerate(value)], None, []
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        data, version = value["data"], value.get("version")
        version = None if version is None else str(version)
        if not data or isinstance(data[0], dict) and "paragraphs" in data[0]:
            return "official", version, *_official_questions(data), []
        if _is_flat_record(data[0]):
            return "flat", version, [_question(r, f"data[{i}]") for i, r in enumerate(data)], None, []
    raise SquadFormatError(f"unknown layout ({_describe(value)}); accepted layouts: {ACCEPTED_LAYOUTS}")


def _check_questions(questions: list[_Question], role: str) -> bool:
    """Raise on what no split can use; returns whether the questions carry answers."""
    if not questions:
        raise SquadFormatError("no questions found; check that the data holds SQuAD records")
    first_place: dict[str, str] = {}
    for q in questions:
        if q.id in first_place:
            raise SquadFormatError(
                f'{q.place}: duplicate id "{q.id}" (first at {first_place[q.id]}); give every question its own id'
            )
        first_place[q.id] = q.place
    without = [q for q in questions if q.answers is None]
    if not without:
        return True
    if len(without) < len(questions):
        raise SquadFormatError(
            f'{without[0].place}: no "answers" while other questions have them; give every question '
            '"answers" (leave them out everywhere only in a predict-only test file)'
        )
    if role != "test":
        raise SquadFormatError(
            f'no question has "answers", which {role} data needs; pass a predict-only file as --test_file'
        )
    return False


def _answer_problems(q: _Question) -> dict[int, str]:
    """Answers whose answer_start does not point at their text, by index, with a message."""
    problems = {}
    for k, (text, start) in enumerate(q.answers or []):
        if not text or start < 0 or q.context[start : start + len(text)] != text:
            there = q.context[max(start, 0) : max(start, 0) + len(text)]
            problems[k] = (
                f'{q.place}.answers[{k}]: answer_start {start} does not point at "{text}" (context there: "{there}")'
            )
    return problems


def _apply_answer_checks(questions: list[_Question], role: str) -> tuple[list[_Question], list[str], int, int]:
    """Drop bad answers (and questions left without any) from train only; eval data is never altered.

    Returns (kept questions, problems, dropped answers, dropped questions).
    """
    kept, problems, dropped_answers, dropped_questions = [], [], 0, 0
    for q in questions:
        bad = _answer_problems(q)
        problems += bad.values()
        if role == "train" and bad:
            q.answers = [a for k, a in enumerate(q.answers) if k not in bad]
            dropped_answers += len(bad)
        if q.answers == [] and not q.is_impossible:
            problems.append(f"{q.place}: answerable question with no valid answers")
            if role == "train":
                dropped_questions += 1
                continue
        kept.append(q)
    return kept, problems, dropped_answers, dropped_questions


def _warn(report: SquadReport, role: str) -> None:
    """Say once per source what is wrong, with a few examples, and what was done about it."""
    if not report.problems:
        return
    if role == "train":
        action = f"dropped {report.dropped_answers} answers and {report.dropped_questions} questions"
    else:
        action = f"kept as is ({role} data is never altered)"
    first = "; ".join(report.problems[:3])
    logger.warning("%s: %d answer problems, %s. First: %s", report.source, len(report.problems), action, first)


def _columns(questions: list[_Question]) -> dict[str, list]:
    """Column lists in FEATURES order."""
    return {
        "id": [q.id for q in questions],
        "title": [q.title for q in questions],
        "context": [q.context for q in questions],
        "question": [q.question for q in questions],
        "answers": [
            {"text": [t for t, _ in q.answers or []], "answer_start": [s for _, s in q.answers or []]}
            for q in questions
        ],
        "is_impossible": [q.is_impossible for q in questions],
    }


def _build(
    questions: list[_Question], source: str, layout: str, version: str | None, role: str,
    shape: tuple[int, int] | None,
) -> tuple[datasets.Dataset, SquadReport]:
    """Shared tail of every source: checks, report and the Dataset in FEATURES.

    shape is (articles, paragraphs) when the nesting gives them; flat data counts
    distinct titles and (title, context) pairs instead.
    """
    has_answers = _check_questions(questions, role)
    questions, problems, dropped_answers, dropped_questions = _apply_answer_checks(questions, role)
    articles, paragraphs = shape or (len({q.title for q in questions}), len({(q.title, q.context) for q in questions}))
    report = SquadReport(
        source=source,
        layout=layout,
        version=version,
        articles=articles,
        paragraphs=paragraphs,
        questions=len(questions),
        unanswerable=sum(q.is_impossible for q in questions),
        has_answers=has_answers,
        longest_context=max((len(q.context) for q in questions), default=0),
        problems=problems,
        dropped_answers=dropped_answers,
        dropped_questions=dropped_questions,
    )
    _warn(report, role)
    # Straight to Arrow: Dataset.from_dict(features=...) encodes row by row, 5x slower on SQuAD train.
    table = pa.Table.from_pydict(_columns(questions), schema=FEATURES.arrow_schema)
    return datasets.Dataset(table), report


def read_squad_file(path: str, role: str) -> tuple[datasets.Dataset, SquadReport]:
    """Read one local file in any accepted layout (detected by content) for the given role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    with _reworded(f"{path}: "):
        layout, version, questions, shape, mismatches = _parse_layout(_read_text(path))
        dataset, report = _build(questions, path, layout, version, role, shape)
    _note_mismatches(report, mismatches)
    return dataset, report


def _squeezed(text: str) -> str:
    """Text as MRQA matched answers: case and spacing left out."""
    return "".join(text.split()).casefold()


def _note_mismatches(report: SquadReport, mismatches: list[_Mismatch]) -> None:
    """Say how many MRQA spans hold other text than their detected answer's "text" (the span's text is the answer).
    Differences in case or spacing only, common where answers were found by a search that ignores them, are
    counted; any other difference is also a problem of the report, listed by `python squad_v2.py FILE`, though no
    answer is dropped for it."""
    if not mismatches:
        return
    other = [f'{place}: holds "{text}", not its detected answer\'s text "{said}"; the context\'s text is used'
             for place, said, text in mismatches if _squeezed(said) != _squeezed(text)]
    report.problems += other
    logger.log(logging.WARNING if other else logging.INFO,
               "%s: %d MRQA answer span(s) hold other text than their detected answer's \"text\", %d of them only in "
               "case or spacing; each answer is the context's text at its span. First: %s", report.source,
               len(mismatches), len(mismatches) - len(other),
               "; ".join(other[:3]) or f'{mismatches[0][0]}: "{mismatches[0][2]}" for "{mismatches[0][1]}"')


def read_records(path: str | None = None, records: list[dict] | None = None,
                 role: str = "test") -> tuple[datasets.Dataset, SquadReport]:
    """Questions given ad hoc: a JSON Lines file (`-`: standard input) or records, each `{question, context}`
    with `id` optional (q1, q2, ... by position), through the same checks as a SQuAD file."""
    source = "<stdin>" if path == "-" else path or "the command line"
    with _reworded(f"{source}: "):
        if path is None:
            placed = [("question", r) for r in records or []]
        else:
            placed = _parse_jsonl(sys.stdin.read() if path == "-" else _read_text(path))
        if not placed:
            raise SquadFormatError('no questions: give JSON Lines of {"question": ..., "context": ...}')
        placed = [(place, {"id": f"q{n}", **r} if isinstance(r, dict) else r)
                  for n, (place, r) in enumerate(placed, start=1)]
        return _build([_question(r, place) for place, r in placed], source, "jsonl", None, role, None)


def _load_hub(
    name: str, config: str | None, cache_dir: str | None, token: str | bool | None, revision: str | None
) -> datasets.DatasetDict:
    """Load from the hub (or its cache), turning network failures into a message with the way out."""
    try:
        return datasets.load_dataset(name, config, cache_dir=cache_dir, token=token, revision=revision)
    except (ConnectionError, LocalEntryNotFoundError) as err:
        raise SquadHubError(
            f"{name}: cannot reach the hub and nothing is cached ({err}); "
            f"go online, or give local files with {FILE_OPTIONS}"
        ) from None
    except FileNotFoundDatasetsError as err:
        raise SquadHubError(f"{name}: {err}; check --dataset_name, or give local files with {FILE_OPTIONS}") from None


def _hub_split(name: str, role: str, split: datasets.Dataset,
               columns: dict[str, str] | None = None) -> tuple[datasets.Dataset, SquadReport]:
    """Put a hub split through the same checks as a flat local file."""
    source = f"{name}[{role}]"
    renames = {theirs: ours for ours, theirs in (columns or {}).items()
               if theirs != ours and theirs in split.column_names}
    if renames:
        split = split.remove_columns([c for c in renames.values() if c in split.column_names])
        split = split.rename_columns(renames)
    missing = [c for c in ("id", "context", "question") if c not in split.column_names]
    if missing:
        raise SquadHubError(
            f"{source}: no column {', '.join(missing)}; use a dataset with SQuAD columns "
            f"(id, title, context, question, answers) or local files with {FILE_OPTIONS}"
        )
    records = split.select_columns([c for c in FEATURES if c in split.column_names]).to_list()
    with _reworded(f"{source}: "):
        questions = [_question(r, f"row {i}") for i, r in enumerate(records)]
        return _build(questions, source, "hub", None, role, None)


def load_squad(
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_file: str | list[str] | None,
    validation_file: str | list[str] | None,
    test_file: str | None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    columns: dict[str, str] | None = None,
    max_train_samples: int | None = None,
) -> tuple[datasets.DatasetDict, dict[str, SquadReport]]:
    """Load splits "train", "validation" (one "validation.NAME" per set when several are given,
    `qakit.evalsets`) and "test", those present; local files override hub splits.

    Several training files are mixed, each capped at `max_train_samples` questions (MRQA's baseline capped
    each dataset); `columns` maps our column names (question, context, answers) to a hub dataset's own
    (HF's --question_column, --context_column, --answer_column); local files keep SQuAD's field names.
    """
    train_files, entries = _as_list(train_file), eval_entries(_as_list(validation_file), None)
    given = {"train": bool(train_files), "validation": bool(entries), "test": bool(test_file)}
    loaded: dict[str, tuple[datasets.Dataset, SquadReport]] = {}
    if dataset_name:
        hub = _load_hub(dataset_name, dataset_config_name, cache_dir, token, revision)
        loaded = {role: _hub_split(dataset_name, role, hub[role], columns) for role in ROLES
                  if role in hub and not given[role]}
        if not loaded and not any(given.values()):
            raise SquadHubError(
                f"{dataset_name}: no train/validation/test split (it has {', '.join(hub)}); "
                f"give local files with {FILE_OPTIONS}"
            )
    if "train" in loaded:
        loaded["train"] = _capped(*loaded["train"], max_train_samples)
    if train_files:
        loaded["train"] = _mixed([_capped(*read_squad_file(path, "train"), max_train_samples) for path in train_files])
    for entry in entries:
        loaded[entry.split] = _read_entry(entry, cache_dir, token, revision, columns)
    if test_file:
        loaded["test"] = read_squad_file(test_file, "test")
    if not loaded:
        raise SquadFormatError(f"no data given; pass --dataset_name or {FILE_OPTIONS}")
    if "train" in loaded:
        _check_training_left(loaded["train"][1])
    order = ["train", *([e.split for e in entries] or ["validation"]), "test"]
    splits = [split for split in order if split in loaded]
    return datasets.DatasetDict({s: loaded[s][0] for s in splits}), {s: loaded[s][1] for s in splits}


def _as_list(value: str | list[str] | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _read_entry(entry: EvalEntry, cache_dir: str | None, token: str | bool | None, revision: str | None,
                columns: dict[str, str] | None) -> tuple[datasets.Dataset, SquadReport]:
    """One evaluation set: a local file, or a hub dataset's validation split (`hub:NAME[:CONFIG]`)."""
    if not entry.hub:
        return read_squad_file(entry.source, "validation")
    hub = _load_hub(entry.source, entry.config or None, cache_dir, token, revision)
    if "validation" not in hub:
        raise SquadHubError(f"{entry.source}: no validation split (it has {', '.join(hub)}); name a dataset that has "
                            "one, or give a local file")
    return _hub_split(entry.source, "validation", hub["validation"], columns)


def _capped(dataset: datasets.Dataset, report: SquadReport, n: int | None) -> tuple[datasets.Dataset, SquadReport]:
    """The first `n` questions (of those left after the answer checks), the report saying so."""
    if n is None or n >= len(dataset):
        return dataset, report
    kept = dataset.select(range(n))
    return kept, dataclasses.replace(report, source=f"{report.source} (first {n:,})", questions=n,
                                     unanswerable=sum(kept["is_impossible"]))


def _mixed(parts: list[tuple[datasets.Dataset, SquadReport]]) -> tuple[datasets.Dataset, SquadReport]:
    """Several training files as one split, and one report that adds them up."""
    if len(parts) == 1:
        return parts[0]
    reports = [r for _, r in parts]
    total = {f: sum(getattr(r, f) for r in reports) for f in ("articles", "paragraphs", "questions", "unanswerable",
                                                               "dropped_answers", "dropped_questions")}
    versions = {r.version for r in reports}
    report = SquadReport(source=" + ".join(r.source for r in reports), layout="+".join(dict.fromkeys(
        r.layout for r in reports)), version=versions.pop() if len(versions) == 1 else None,
        has_answers=all(r.has_answers for r in reports), longest_context=max(r.longest_context for r in reports),
        problems=[p for r in reports for p in r.problems], **total)
    return datasets.concatenate_datasets([d for d, _ in parts]), report


def _check_training_left(report: SquadReport) -> None:
    """Training data whose every question was dropped for its answers would end in a KeyError far downstream, when
    the training windows are made from nothing. (read_squad_file itself gives the empty split: it reads a file.)"""
    if report.questions:
        return
    listing = "" if report.layout == "hub" else f" (python squad_v2.py {report.source} lists every problem)"
    raise SquadFormatError(
        f"{report.source}: no training question is left, so no training window: all {report.dropped_questions} were "
        f"dropped for want of a valid answer ({report.dropped_answers} answer(s) whose answer_start does not point at "
        f"their text; first: {report.problems[0]}); fix the answers{listing}"
    )


def load_questions(data_args: Any, cache_dir: str | None = None,
                   token: str | bool | None = None) -> tuple[datasets.DatasetDict, dict[str, SquadReport]]:
    """qa.py's splits: from the hub or local files (checked against --version_2_with_negative), or the
    questions asked on the command line or in a JSON Lines file (as the test split)."""
    if data_args.asking:
        asked, report = read_asked(data_args.question, data_args.context, data_args.questions_file)
        return datasets.DatasetDict({"test": asked}), {"test": report}
    columns = {"question": data_args.question_column, "context": data_args.context_column,
               "answers": data_args.answer_column}
    raw, reports = load_squad(data_args.dataset_name, data_args.dataset_config_name, data_args.train_file,
                              data_args.validation_file, data_args.test_file, cache_dir=cache_dir, token=token,
                              columns=columns, max_train_samples=data_args.max_train_samples)
    check_answerability(raw, reports, data_args.version_2_with_negative)
    return raw, reports


def read_asked(question: str | None, context: str | None,
               questions_file: str | None) -> tuple[datasets.Dataset, SquadReport]:
    """Questions asked ad hoc: one (--question with --context) or a JSON Lines file of them (--questions_file)."""
    if questions_file and (question or context):
        raise QAConfigError("ask either one question (--question with --context) or a file of them "
                            "(--questions_file), not both")
    if questions_file:
        return read_records(path=questions_file)
    if not (question and context):
        raise QAConfigError("--question needs --context (the text the answer is taken from), and the reverse")
    return read_records(records=[{"question": question, "context": context}])


def check_answerability(raw: datasets.DatasetDict, reports: dict[str, SquadReport],
                        version_2_with_negative: bool) -> None:
    """Unanswerable questions need the v2 flag; the reverse only costs a null position."""
    has_null = {split: sum(raw[split]["is_impossible"]) for split in raw}
    if not version_2_with_negative and any(has_null.values()):
        split = next(s for s, n in has_null.items() if n)
        first = raw[split][list(raw[split]["is_impossible"]).index(True)]["id"]
        where = ", ".join(f"{reports[s].source} ({s}): {n}" for s, n in has_null.items() if n)
        raise QAConfigError(f"unanswerable questions in {where}, e.g. id {first}: add --version_2_with_negative")
    if version_2_with_negative and not any(has_null.values()):
        logger.warning("--version_2_with_negative is set but no question is unanswerable (SQuAD v1.1 data?)")



def gold_answers(path: str) -> dict[str, list[str]]:
    """id -> answer texts ([] = unanswerable) of a data file in any accepted layout; empty when the file has no
    answers (a test file). Read as "validation", as the run that evaluated it read it."""
    dataset, report = read_squad_file(str(path), "validation")
    if not report.has_answers:
        return {}
    return {qid: list(answers["text"]) for qid, answers in zip(dataset["id"], dataset["answers"])}


def _summary(report: SquadReport, shown: int = 5) -> str:
    """A readable per-file summary for the command line."""
    version = f", version {report.version}" if report.version else ""
    answers = "yes" if report.has_answers else "no (predict-only)"
    lines = [
        f"{report.source}: {report.layout} layout{version}",
        f"  articles         {report.articles:,}",
        f"  paragraphs       {report.paragraphs:,}",
        f"  questions        {report.questions:,}",
        f"  unanswerable     {report.unanswerable:,}",
        f"  has answers      {answers}",
        f"  longest context  {report.longest_context:,} chars",
        f"  problems         {len(report.problems):,}",
    ]
    lines += [f"    {problem}" for problem in report.problems[:shown]]
    if len(report.problems) > shown:
        lines.append(f"    ... and {len(report.problems) - shown:,} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check and summarise files; read as "test" so nothing is dropped and answers stay optional."""
    parser = argparse.ArgumentParser(description="Check SQuAD-style files and summarise what they hold.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="official SQuAD JSON, flat JSON or JSON Lines")
    args = parser.parse_args(argv)
    logger.setLevel(logging.ERROR)  # the summary lists the problems the warning would repeat
    failed = False
    for path in args.files:
        try:
            print(_summary(read_squad_file(path, "test")[1]))
        except SquadFormatError as err:
            print(f"error: {err}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
