"""Property-based tests of the SQuAD loader and the two scorers.

Hypothesis builds valid inputs, each with its expected result worked out here from how it was built (the records
a file holds; the scores from the answers' known tokens, not by normalizing text), and breaks them on purpose: the
same input with one named corruption, which must end in our own error type with a message that names the place
(the file and record, the field, the question id). Every example of the main tests checks a valid input and then
its broken twin; each test counts the branches that ran and fails when one did not run; every corruption also has
a test of its own. Runs are derandomized, with no example database. (Hypothesis also draws on constants found in
the modules loaded, so the examples can differ with the tests run before; the counts hold by construction.)
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import squad_v2
from metrics.squad import squad_common as v1_common
from metrics.squad.compute_score import score_v1
from metrics.squad_v2.compute_score import MissingPredictionsError, score_v2
from metrics.squad_v2.squad_common import ScoreInputError

FUZZ = settings(max_examples=30, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EACH = settings(FUZZ, max_examples=8)  # one named corruption at a time


def _ran(counts: Counter, branch: str) -> None:
    counts[branch] += 1
    event(branch)


def _enough(counts: Counter, least: dict[str, int], test: str) -> None:
    """Each branch ran at least so often (printed, for `pytest -s`)."""
    print(f"\n{test}: {dict(sorted(counts.items()))}")
    for branch, n in least.items():
        assert counts[branch] >= n, (branch, dict(counts))


# ================================================================================================
# The loader: squad_v2.read_squad_file
# ================================================================================================

LAYOUTS = ("official", "flat-data", "flat-list", "jsonl")
LAYOUT_NAME = {"official": "official", "flat-data": "flat", "flat-list": "flat", "jsonl": "jsonl"}
JSON_TYPE = {str: "string", float: "float", type(None): "null", bool: "true/false", list: "list"}

chars = st.characters(codec="utf-8", exclude_categories=("Cs",))
has_text = st.text(chars, min_size=1, max_size=30).filter(str.strip)  # something besides whitespace
blank = st.text(st.sampled_from(" \t\n\r\u00a0\u2003"), max_size=4)  # nothing but whitespace ("" too)
question_ids = st.one_of(st.text(chars, min_size=1, max_size=8), st.integers(0, 10**6))


@dataclass
class Question:
    id: str | int
    question: str
    answers: list[tuple[str, int]] | None  # None: no "answers" key at all (a predict-only file)
    stated: bool | None  # "is_impossible" as written; None: not written
    impossible: bool  # what the loader must make of it


@dataclass
class Paragraph:
    context: str
    questions: list[Question] = field(default_factory=list)


@dataclass
class Article:
    title: str | None
    paragraphs: list[Paragraph] = field(default_factory=list)


@dataclass
class Doc:
    """A valid SQuAD source as built, before it is written in one of the accepted layouts."""

    layout: str
    version: object
    articles: list[Article]
    role: str
    ensure_ascii: bool

    def questions(self) -> list[tuple[Article, Paragraph, Question]]:
        return [(a, p, q) for a in self.articles for p in a.paragraphs for q in p.questions]


@st.composite
def _answer(draw, context: str) -> tuple[str, int]:
    """A real substring of the context and where it starts."""
    start = draw(st.integers(0, len(context) - 1))
    end = draw(st.integers(start + 1, min(len(context), start + 12)))
    return context[start:end], start


@st.composite
def _question(draw, qid, context: str, with_answers: bool, answerable: bool) -> Question:
    text = draw(has_text)
    if not with_answers:  # a predict-only file: impossible only where it says so
        stated = draw(st.sampled_from([None, None, True, False]))
        return Question(qid, text, None, stated, bool(stated))
    if not answerable and draw(st.integers(0, 2)) == 0:  # v2's unanswerable, or v1.1 style: no answers, no flag
        return Question(qid, text, [], draw(st.sampled_from([None, True])), True)
    answers = draw(st.lists(_answer(context), min_size=1, max_size=3))
    return Question(qid, text, answers, draw(st.sampled_from([None, False])), False)


@st.composite
def documents(draw, min_questions: int = 1, with_answers: bool | None = None, answerable: bool = False,
              layouts: tuple[str, ...] = LAYOUTS, roles: tuple[str, ...] = squad_v2.ROLES) -> Doc:
    """A valid source; `answerable`: its first question has answers."""
    if with_answers is None:
        with_answers = draw(st.sampled_from([True, True, True, True, False]))  # predict-only: the exception
    shape = draw(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=2), min_size=1, max_size=2))
    shape[0][0] = max(shape[0][0], min_questions)  # questions per paragraph, per article
    ids = iter(draw(st.lists(question_ids, min_size=sum(map(sum, shape)), max_size=sum(map(sum, shape)),
                             unique_by=str)))
    articles, first = [], True
    for counts in shape:
        article = Article(draw(st.one_of(st.none(), st.text(chars, max_size=10))))
        for n in counts:
            paragraph = Paragraph(draw(has_text))
            for _ in range(n):
                paragraph.questions.append(draw(_question(next(ids), paragraph.context, with_answers,
                                                          answerable and first)))
                first = False
            article.paragraphs.append(paragraph)
        articles.append(article)
    role = draw(st.sampled_from(roles if with_answers else ("test",)))  # no answers anywhere: only test data
    return Doc(draw(st.sampled_from(layouts)), draw(st.sampled_from([None, "v2.0", "1.1", 2.0])), articles, role,
               draw(st.booleans()))


@dataclass
class Written:
    """A Doc as JSON values: the top level, each question's record (in file order), the object holding its
    context, and the places the loader's messages give for both."""

    top: object
    records: list[dict]
    holders: list[dict]
    places: list[str]
    context_places: list[str]


def write(doc: Doc) -> Written:
    records, holders, places, context_places, data = [], [], [], [], []
    for a, article in enumerate(doc.articles):
        out_article = {"paragraphs": []} | ({} if article.title is None else {"title": article.title})
        for p, paragraph in enumerate(article.paragraphs):
            out_paragraph = {"context": paragraph.context, "qas": []}
            for q in paragraph.questions:
                if doc.layout == "official":
                    record = {"id": q.id, "question": q.question}
                    if q.answers is not None:
                        record["answers"] = [{"text": t, "answer_start": s} for t, s in q.answers]
                    out_paragraph["qas"].append(record)
                    holders.append(out_paragraph)
                    places.append(f"data[{a}].paragraphs[{p}].qas[{len(out_paragraph['qas']) - 1}]")
                    context_places.append(f"data[{a}].paragraphs[{p}]")
                else:
                    record = {"id": q.id, "context": paragraph.context, "question": q.question}
                    if article.title is not None:
                        record["title"] = article.title
                    if q.answers is not None:
                        record["answers"] = {"text": [t for t, _ in q.answers],
                                             "answer_start": [s for _, s in q.answers]}
                    holders.append(record)
                    i = len(records)
                    places.append({"flat-data": f"data[{i}]", "flat-list": f"[{i}]",
                                   "jsonl": f"line {i + 1}"}[doc.layout])
                    context_places.append(places[-1])
                if q.stated is not None:
                    record["is_impossible"] = q.stated
                records.append(record)
            out_article["paragraphs"].append(out_paragraph)
        data.append(out_article)
    if doc.layout == "official":
        top = {"data": data}
    elif doc.layout == "flat-data":
        top = {"data": records}
    else:
        top = records
    if isinstance(top, dict) and doc.version is not None:
        top["version"] = doc.version
    return Written(top, records, holders, places, context_places)


def dump(doc: Doc, top: object) -> str:
    if doc.layout == "jsonl" and isinstance(top, list):
        return "\n".join(json.dumps(record, ensure_ascii=doc.ensure_ascii) for record in top)
    return json.dumps(top, ensure_ascii=doc.ensure_ascii)


def expected_rows(doc: Doc) -> list[dict]:
    """The records the loader must give, in file order, from the questions as built."""
    return [{"id": str(q.id), "title": a.title or "", "context": p.context, "question": q.question,
             "answers": {"text": [t for t, _ in q.answers or []], "answer_start": [s for _, s in q.answers or []]},
             "is_impossible": q.impossible}
            for a, p, q in doc.questions()]


@dataclass
class Broken:
    """A corrupted source: its text, the document it came from (and the role it is read as), and what must
    come of it."""

    name: str
    doc: Doc
    text: str
    fragments: list[str]  # each must be in the error message
    check: Callable | None = None  # a corruption the loader reports and works around instead of refusing


def _pick(draw, doc: Doc, answered: bool = False) -> int:
    indices = [i for i, (_, _, q) in enumerate(doc.questions()) if q.answers or not answered]
    return draw(st.sampled_from(indices))


def _duplicate_id(draw, doc, w):
    j = draw(st.integers(1, len(w.records) - 1))
    i = draw(st.integers(0, j - 1))
    w.records[j]["id"] = w.records[i]["id"]
    return [f'{w.places[j]}: duplicate id "{w.records[i]["id"]}"', f"(first at {w.places[i]})"]


def _missing_question(draw, doc, w):
    i = _pick(draw, doc)
    del w.records[i]["question"]
    return [f'{w.places[i]}: no "question"']


def _blank_question(draw, doc, w):
    i = _pick(draw, doc)
    w.records[i]["question"] = draw(blank)
    return [f'{w.places[i]}: empty "question"']


def _blank_context(draw, doc, w):
    i = _pick(draw, doc)
    w.holders[i]["context"] = draw(blank)
    return [f'{w.context_places[i]}: empty "context"']


def _answer_start_not_an_integer(draw, doc, w):
    i = _pick(draw, doc, answered=True)
    k = draw(st.integers(0, len(doc.questions()[i][2].answers) - 1))
    bad = draw(st.one_of(st.text(max_size=3), st.floats(allow_nan=False, allow_infinity=False), st.none(),
                         st.booleans()))
    if doc.layout == "official":
        w.records[i]["answers"][k]["answer_start"] = bad
        return [f'{w.places[i]}.answers[{k}]: "answer_start": is a {JSON_TYPE[type(bad)]}']
    w.records[i]["answers"]["answer_start"][k] = bad
    return [f"{w.places[i]}.answers.answer_start[{k}]: is a {JSON_TYPE[type(bad)]}"]


def _id_not_a_string(draw, doc, w):
    i = _pick(draw, doc)
    w.records[i]["id"] = bad = draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.none(),
                                              st.booleans(), st.lists(st.integers(), max_size=2)))
    return [f'{w.places[i]}: "id": is a {JSON_TYPE[type(bad)]}']


def _impossible_with_answers(draw, doc, w):
    i = _pick(draw, doc, answered=True)
    w.records[i]["is_impossible"] = True
    return [f'{w.places[i]}: "is_impossible" is true but "answers" is not empty']


def _answers_missing_on_one(draw, doc, w):
    i = _pick(draw, doc)
    del w.records[i]["answers"]
    return [f'{w.places[i]}: no "answers" while other questions have them']


def _no_answers_outside_test(draw, doc, w):
    for record in w.records:
        del record["answers"]
    return [f'no question has "answers", which {doc.role} data needs']


def _no_questions(draw, doc, w):
    for holder in w.holders:
        holder["qas"] = []
    return ["no questions found"]


def _unknown_layout(draw, doc, w):
    w.top = {"articles": w.top}
    return ['unknown layout (top level is an object with keys "articles")']


def _truncated(draw, doc, w):
    return []  # cut in `corrupt`, where the text is


def _misplaced_answer(draw, doc, w):
    """An answer_start that does not point at its text: reported; train drops it, other roles keep it."""
    i = _pick(draw, doc, answered=True)
    question = doc.questions()[i][2]
    k = draw(st.integers(0, len(question.answers) - 1))
    text, _ = question.answers[k]
    bad = draw(st.sampled_from([-1, len(doc.questions()[i][1].context)]))  # before the context, or past it
    if doc.layout == "official":
        w.records[i]["answers"][k]["answer_start"] = bad
    else:
        w.records[i]["answers"]["answer_start"][k] = bad
    question.answers[k] = (text, bad)
    problem = f'{w.places[i]}.answers[{k}]: answer_start {bad} does not point at "{text}"'
    return [problem, i, k, w.places[i]]


@dataclass(frozen=True)
class Corruption:
    apply: Callable
    needs: dict = field(default_factory=dict)  # what documents() must give for it to apply


CORRUPTIONS = {
    "duplicate_id": Corruption(_duplicate_id, {"min_questions": 2}),
    "missing_question": Corruption(_missing_question),
    "blank_question": Corruption(_blank_question),
    "blank_context": Corruption(_blank_context),
    "answer_start_not_an_integer": Corruption(_answer_start_not_an_integer, {"with_answers": True, "answerable": True}),
    "id_not_a_string": Corruption(_id_not_a_string),
    "impossible_with_answers": Corruption(_impossible_with_answers, {"with_answers": True, "answerable": True}),
    "answers_missing_on_one": Corruption(_answers_missing_on_one, {"min_questions": 2, "with_answers": True}),
    "no_answers_outside_test": Corruption(_no_answers_outside_test,
                                          {"with_answers": True, "roles": ("train", "validation")}),
    "no_questions": Corruption(_no_questions, {"layouts": ("official",)}),
    "unknown_layout": Corruption(_unknown_layout),
    "truncated": Corruption(_truncated),
    "misplaced_answer": Corruption(_misplaced_answer, {"with_answers": True, "answerable": True}),
}


def applies(name: str, doc: Doc) -> bool:
    """Whether the document has what the corruption changes (see Corruption.needs)."""
    needs, questions = CORRUPTIONS[name].needs, [q for _, _, q in doc.questions()]
    return (len(questions) >= needs.get("min_questions", 1) and doc.layout in needs.get("layouts", LAYOUTS)
            and doc.role in needs.get("roles", squad_v2.ROLES)
            and (not needs.get("with_answers") or questions[0].answers is not None)
            and (not needs.get("answerable") or any(q.answers for q in questions)))


@st.composite
def corrupted(draw, name: str) -> Broken:
    """A valid document made for the named corruption, with it."""
    return corrupt(draw, draw(documents(**CORRUPTIONS[name].needs)), name)


def corrupt(draw, doc: Doc, name: str) -> Broken:
    """The document (changed in place) with one named corruption; `draw` draws its details."""
    assert applies(name, doc), name
    written = write(doc)
    fragments = CORRUPTIONS[name].apply(draw, doc, written)
    text = dump(doc, written.top)
    if name == "truncated":
        if doc.layout == "jsonl" and "\n" in text:  # cut inside the last record: the lines before it are whole
            last = text.rindex("\n") + 1
            text = text[:draw(st.integers(last + 1, len(text) - 1))]
            fragments = [f"line {text.count(chr(10)) + 1}: not valid JSON"]
        else:
            text = text[:draw(st.integers(1, len(text) - 1))]
            fragments = ["not valid JSON at line 1"]
    if name == "misplaced_answer":
        problem, i, k, place = fragments
        return Broken(name, doc, text, [], check=lambda ds, report: _misplaced_kept_or_dropped(
            doc, ds, report, problem, i, k, place))
    return Broken(name, doc, text, fragments)


def _misplaced_kept_or_dropped(doc: Doc, ds, report, problem: str, i: int, k: int, place: str) -> None:
    rows = expected_rows(doc)  # the bad answer_start as written
    assert report.problems[0].startswith(problem), (problem, report.problems)
    if doc.role != "train":  # evaluation and test data are never altered
        assert ds.to_list() == rows and len(report.problems) == 1
        assert (report.dropped_answers, report.dropped_questions) == (0, 0)
        return
    for key in ("text", "answer_start"):
        del rows[i]["answers"][key][k]
    if rows[i]["answers"]["text"]:
        assert (report.dropped_answers, report.dropped_questions) == (1, 0) and len(report.problems) == 1
    else:  # its only answer: the question goes too
        assert report.problems[1] == f"{place}: answerable question with no valid answers"
        assert (report.dropped_answers, report.dropped_questions) == (1, 1)
        del rows[i]
    assert ds.to_list() == rows


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.json"


def check_loads(doc: Doc, path) -> None:
    """Valid: every record, field for field, and the report's counts."""
    path.write_text(dump(doc, write(doc).top), encoding="utf-8")
    ds, report = squad_v2.read_squad_file(str(path), doc.role)
    rows = expected_rows(doc)
    assert ds.to_list() == rows
    assert set(ds.column_names) == set(squad_v2.FEATURES)
    assert report.layout == LAYOUT_NAME[doc.layout] and report.problems == []
    assert report.questions == len(rows) and report.unanswerable == sum(r["is_impossible"] for r in rows)
    assert report.has_answers is all(q.answers is not None for _, _, q in doc.questions())
    assert report.longest_context == max(len(r["context"]) for r in rows)
    keeps_version = doc.layout in ("official", "flat-data") and doc.version is not None
    assert report.version == (str(doc.version) if keeps_version else None)
    if doc.layout == "official":
        assert report.articles == len(doc.articles)
        assert report.paragraphs == sum(len(a.paragraphs) for a in doc.articles)
    else:  # flat records: distinct titles, distinct (title, context)
        assert report.articles == len({r["title"] for r in rows})
        assert report.paragraphs == len({(r["title"], r["context"]) for r in rows})


def check_refused(broken: Broken, path) -> None:
    """Broken: our error, once prefixed with the file, naming the place; or, reported and worked around."""
    path.write_text(broken.text, encoding="utf-8")
    if broken.check is not None:
        broken.check(*squad_v2.read_squad_file(str(path), broken.doc.role))
        return
    with pytest.raises(squad_v2.SquadFormatError) as caught:
        squad_v2.read_squad_file(str(path), broken.doc.role)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and message.count(str(path)) == 1, message
    for fragment in broken.fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loader_reads_valid_sources_and_names_the_place_in_their_broken_twins(layout, source):
    """Every example: a valid source, which must load as built, then the same source with one corruption (of
    those that apply to it), which must be refused naming the place."""
    counts, corruptions = Counter(), Counter()

    @settings(FUZZ, max_examples=25)
    @given(documents(with_answers=True, layouts=(layout,)), st.data())
    def check(doc, data):
        _ran(counts, "valid")
        check_loads(doc, source)
        name = data.draw(st.sampled_from([n for n in sorted(CORRUPTIONS) if applies(n, doc)]), label="corruption")
        _ran(counts, "invalid")
        corruptions[name] += 1
        check_refused(corrupt(data.draw, copy.deepcopy(doc), name), source)

    check()
    print(f"corruptions, {layout}: {dict(sorted(corruptions.items()))}")
    _enough(counts, {"valid": 25, "invalid": 25}, f"loader, {layout}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loader_reads_predict_only_sources(layout, source):
    """No "answers" anywhere: a test file, read with empty answers; impossible only where it says so."""
    counts = Counter()

    @EACH
    @given(documents(with_answers=False, layouts=(layout,)))
    def check(doc):
        _ran(counts, "valid, predict-only")
        check_loads(doc, source)

    check()
    assert counts["valid, predict-only"] >= EACH.max_examples // 2, dict(counts)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_loader_refuses_each_corruption_where_it_is(name, source):
    counts = Counter()

    @EACH
    @given(corrupted(name))
    def check(case):
        _ran(counts, name)
        check_refused(case, source)

    check()
    assert counts[name] >= EACH.max_examples // 2, dict(counts)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_json_lines_may_hold_unicode_line_separators(separator, tmp_path):
    records = [{"id": f"q{n}", "context": f"one{separator}two", "question": "which?",
                "answers": {"text": ["two"], "answer_start": [3 + len(separator)]}} for n in range(2)]
    path = tmp_path / "lines.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    ds, _ = squad_v2.read_squad_file(str(path), "validation")
    assert ds["context"] == [f"one{separator}two"] * 2


# ================================================================================================
# The scorers: metrics/squad (v1.1) and metrics/squad_v2 (v2.0)
# ================================================================================================

# Answers are built from known tokens and written with what normalization removes (case, ASCII punctuation at
# the edges, the articles a/an/the, extra whitespace), so the expected scores come from the tokens alone.
WORDS = ("apple", "river", "stone", "cloud", "tiger", "paper", "seven", "north", "café", "ember")
tokens = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5)
score_ids = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=6)


@st.composite
def _dressed(draw, word: str) -> str:
    case = draw(st.sampled_from([str.lower, str.capitalize, str.upper]))
    return draw(st.sampled_from(["", "(", '"', "'"])) + case(word) + draw(st.sampled_from(["", ",", ".", "!", "?",
                                                                                             ")", ";", ":", "'"]))


@st.composite
def written_as(draw, words: list[str]) -> str:
    """A text whose SQuAD-normalized tokens are `words`; "" for no words at all."""
    if not words:
        return ""
    parts = []
    for word in words:
        if draw(st.integers(0, 3)) == 0:
            parts.append(draw(_dressed(draw(st.sampled_from(["the", "a", "an"])))))
        parts.append(draw(_dressed(word)))
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from([" ", "  ", "\t", "\n"])) + part
    return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " ", "\n"]))


def _f1(pred: list[str], gold: list[str]) -> float:
    """Token F1 as 2 * common / (predicted + gold tokens); 0 without a common token."""
    common = sum(min(pred.count(w), gold.count(w)) for w in set(pred))
    return 2 * common / (len(pred) + len(gold)) if common else 0.0


def _f1_v2(pred: list[str], gold: list[str]) -> float:
    """v2.0: an empty side means "no answer", right only against no answer."""
    return float(pred == gold) if not (pred and gold) else _f1(pred, gold)


@dataclass
class Scoring:
    """Gold answers and predictions as texts (what the scorer gets) and as tokens (what the oracle uses)."""

    gold: dict[str, list[str]]
    gold_words: dict[str, list[list[str]]]
    preds: dict  # id -> text; extra ids the scorer ignores
    pred_words: dict[str, list[str]]
    na_probs: dict | None = None
    thresh: float | None = None
    v2: bool = True


@st.composite
def _gold_answer(draw) -> list[str]:
    """Tokens of one gold answer; now and then none at all (a gold text like "The." normalizes to nothing)."""
    return [] if draw(st.integers(0, 9)) == 0 else draw(tokens)


@st.composite
def scorings(draw, v2: bool, na_probs: bool | None = None, unanswered: bool | None = None) -> Scoring:
    """Gold answers and predictions; v2.0: with no-answer probabilities or not (None: either), v1.1: with some
    questions left unanswered or not (None: either)."""
    ids = draw(st.lists(score_ids, min_size=1, max_size=6, unique=True))
    gold, gold_words, preds, pred_words = {}, {}, {}, {}
    for qid in ids:
        answerable = not v2 or draw(st.integers(0, 2)) > 0
        words = draw(st.lists(_gold_answer(), min_size=1, max_size=3)) if answerable else []
        gold_words[qid] = words
        gold[qid] = [draw(written_as(w)) if w else draw(st.sampled_from(["", "The.", "...", "(a)"])) for w in words]
        kind = draw(st.sampled_from(["copy", "copy", "other", "empty"] + ([] if v2 or unanswered is False
                                                                         else ["missing"])))
        if kind == "missing":
            continue
        pred = (draw(st.sampled_from(words)) if kind == "copy" and words else
                draw(tokens) if kind == "other" else [])
        preds[qid], pred_words[qid] = draw(written_as(pred)), pred
    if unanswered and len(pred_words) == len(ids):
        del preds[ids[0]], pred_words[ids[0]]
    for extra in draw(st.lists(score_ids.filter(lambda i: i not in gold), max_size=2, unique=True)):
        preds[extra] = draw(st.text(max_size=5))  # ignored
    scoring = Scoring(gold, gold_words, preds, pred_words, v2=v2)
    if v2 and (draw(st.booleans()) if na_probs is None else na_probs):
        order = draw(st.permutations(ids + [i for i in preds if i not in gold]))  # dict order breaks ties
        probs = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(-3, 3), st.integers(-2, 2))
        scoring.na_probs = {qid: draw(probs) for qid in order}
    if v2 and draw(st.booleans()):
        scoring.thresh = draw(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(-2, 2)))
    return scoring


def expected_v1(s: Scoring) -> dict:
    exact = f1 = 0.0
    for qid, golds in s.gold_words.items():
        if qid in s.pred_words:  # a missing prediction scores 0
            exact += max(float(s.pred_words[qid] == g) for g in golds)
            f1 += max(_f1(s.pred_words[qid], g) for g in golds)
    return {"exact_match": 100 * exact / len(s.gold), "f1": 100 * f1 / len(s.gold)}


def expected_v2(s: Scoring) -> dict:
    thresh = 1.0 if s.thresh is None else s.thresh
    raw_exact, raw_f1, answerable = {}, {}, {}
    for qid, golds in s.gold_words.items():
        targets = [g for g in golds if g] or [[]]  # gold texts that normalize to nothing do not count
        pred = s.pred_words[qid]
        raw_exact[qid] = max(float(pred == t) for t in targets)
        raw_f1[qid] = max(_f1_v2(pred, t) for t in targets)
        answerable[qid] = bool(golds)

    def no_answer(qid):  # over the threshold: "no answer", right exactly when there is none
        return (s.na_probs or {}).get(qid, 0.0) > thresh

    exact = {q: float(not answerable[q]) if no_answer(q) else raw_exact[q] for q in s.gold}
    f1 = {q: float(not answerable[q]) if no_answer(q) else raw_f1[q] for q in s.gold}
    result = {}
    for prefix, qids in (("", list(s.gold)), ("HasAns_", [q for q in s.gold if answerable[q]]),
                         ("NoAns_", [q for q in s.gold if not answerable[q]])):
        if qids:
            result |= {f"{prefix}exact": 100 * sum(exact[q] for q in qids) / len(qids),
                       f"{prefix}f1": 100 * sum(f1[q] for q in qids) / len(qids), f"{prefix}total": len(qids)}
    if s.na_probs is not None:
        # The official sweep answers the questions one by one by rising probability (ties in dict order) and
        # keeps the first best count; here every prefix of that order is scored from scratch.
        order = [q for q in sorted(s.na_probs, key=s.na_probs.get) if q in s.gold]
        for name, raw in (("exact", raw_exact), ("f1", raw_f1)):
            totals = [sum(raw[q] for q in order[:k]) + sum(not answerable[q] for q in order[k:])
                      for k in range(len(order) + 1)]
            k = next(k for k, total in enumerate(totals) if total >= max(totals) - 1e-9)
            result[f"best_{name}"] = 100 * totals[k] / len(s.gold)
            result[f"best_{name}_thresh"] = s.na_probs[order[k - 1]] if k else 0.0
    return result


def _same(result: dict, expected: dict) -> None:
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (key, result[key], value)
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # finite numbers: valid JSON


def _not_text(draw) -> object:
    return draw(st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.lists(st.text(max_size=2),
                                                                                           max_size=1)))


# metrics/squad/squad_common.py is a link to metrics/squad_v2/squad_common.py, imported as a module of its own:
# the v1.1 scorer raises that module's ScoreInputError, a class apart from v2.0's (both are ValueErrors).
def _input_error(s) -> type:
    return ScoreInputError if s.v2 else v1_common.ScoreInputError


def _prediction_not_text(draw, s):
    s.preds = s.preds or {next(iter(s.gold)): ""}  # v1.1: every prediction may be missing
    qid = draw(st.sampled_from(sorted(s.preds)))
    s.preds[qid] = bad = _not_text(draw)
    return _input_error(s), [f"1 answer(s) are not strings ({type(bad).__name__}), e.g. ids {qid};"]


def _predictions_not_a_mapping(draw, s):
    s.preds = list(s.preds.values())
    return _input_error(s), ["must map question ids to answer texts, not a list"]


def _missing_prediction(draw, s):
    qid = draw(st.sampled_from(list(s.gold)))
    del s.preds[qid]
    return MissingPredictionsError, [f"no prediction for 1 of {len(s.gold)} questions: {qid}"]


def _missing_probability(draw, s):
    qid = draw(st.sampled_from(list(s.gold)))
    s.na_probs = s.na_probs or {q: 0.5 for q in s.gold}
    del s.na_probs[qid]
    return MissingPredictionsError, [f"no no-answer probability for 1 of {len(s.gold)} questions: {qid}"]


def _probability_not_finite(draw, s):
    qid = draw(st.sampled_from(list(s.gold)))
    s.na_probs = s.na_probs or {q: 0.5 for q in s.gold}
    s.na_probs[qid] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return ScoreInputError, [f"1 value(s) are NaN or infinite, e.g. ids {qid};"]


def _probability_not_a_number(draw, s):
    qid = draw(st.sampled_from(list(s.gold)))
    s.na_probs = s.na_probs or {q: 0.5 for q in s.gold}
    s.na_probs[qid] = draw(st.one_of(st.text(max_size=3), st.booleans(), st.none()))
    return ScoreInputError, [f"1 value(s) are not numbers, e.g. ids {qid}"]


def _gold_without_answers(draw, s):
    qid = draw(st.sampled_from(list(s.gold)))
    s.gold[qid] = []
    return v1_common.ScoreInputError, [f"1 question(s) have no gold answer (SQuAD v2.0 data?), e.g. {qid}:"]


V2_CORRUPTIONS = {f.__name__[1:]: f for f in (_prediction_not_text, _predictions_not_a_mapping, _missing_prediction,
                                               _missing_probability, _probability_not_finite,
                                               _probability_not_a_number)}
V1_CORRUPTIONS = {f.__name__[1:]: f for f in (_prediction_not_text, _predictions_not_a_mapping,
                                               _gold_without_answers)}


@st.composite
def broken_scorings(draw, v2: bool, name: str) -> tuple[Scoring, type, list[str]]:
    corruptions = V2_CORRUPTIONS if v2 else V1_CORRUPTIONS
    s = draw(scorings(v2))
    error, fragments = corruptions[name](draw, s)
    return s, error, fragments


def _refused(call: Callable, error: type, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        call()
    assert type(caught.value) is error, type(caught.value)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))


def _score_v2(s: Scoring) -> dict:
    return score_v2(s.gold, s.preds, s.na_probs, *([] if s.thresh is None else [s.thresh]))


@pytest.mark.parametrize("na_probs", [False, True], ids=["without-na-probs", "with-na-probs"])
def test_v2_scores_are_the_token_counts_or_a_clear_error(na_probs):
    """Every example: valid inputs, scored as their tokens say, then the same with one corruption, refused."""
    counts = Counter()

    @FUZZ
    @given(scorings(v2=True, na_probs=na_probs), st.data())
    def check(s, data):
        _ran(counts, "valid")
        _same(_score_v2(s), expected_v2(s))
        name = data.draw(st.sampled_from(sorted(V2_CORRUPTIONS)), label="corruption")
        _ran(counts, f"invalid: {name}")
        broken = copy.deepcopy(s)
        error, fragments = V2_CORRUPTIONS[name](data.draw, broken)
        _refused(lambda: _score_v2(broken), error, fragments)

    check()
    counts["invalid"] = sum(n for branch, n in counts.items() if branch.startswith("invalid"))
    _enough(counts, {"valid": 30, "invalid": 30}, f"score_v2, na_probs {na_probs}")


@pytest.mark.parametrize("unanswered", [False, True], ids=["all-answered", "some-unanswered"])
def test_v1_scores_are_the_token_counts_or_a_clear_error(unanswered, capsys):
    """As for v2.0; a question without a prediction scores 0 and is named on stderr, as the official does."""
    counts = Counter()

    @FUZZ
    @given(scorings(v2=False, unanswered=unanswered), st.data())
    def check(s, data):
        capsys.readouterr()
        missing = [q for q in s.gold if q not in s.preds]
        assert bool(missing) is unanswered
        _ran(counts, "valid")
        _same(score_v1(s.gold, s.preds), expected_v1(s))
        assert capsys.readouterr().err == "".join(f"Unanswered question {q} will receive score 0.\n" for q in missing)
        name = data.draw(st.sampled_from(sorted(V1_CORRUPTIONS)), label="corruption")
        _ran(counts, f"invalid: {name}")
        broken = copy.deepcopy(s)
        error, fragments = V1_CORRUPTIONS[name](data.draw, broken)
        _refused(lambda: score_v1(broken.gold, broken.preds), error, fragments)

    check()
    counts["invalid"] = sum(n for branch, n in counts.items() if branch.startswith("invalid"))
    _enough(counts, {"valid": 30, "invalid": 30}, f"score_v1, unanswered {unanswered}")


@pytest.mark.parametrize("v2,name", [(True, n) for n in sorted(V2_CORRUPTIONS)] +
                         [(False, n) for n in sorted(V1_CORRUPTIONS)])
def test_scorers_refuse_each_corruption_naming_the_ids(v2, name):
    counts = Counter()

    @EACH
    @given(broken_scorings(v2, name))
    def check(case):
        _ran(counts, name)
        s, error, fragments = case
        _refused((lambda: _score_v2(s)) if v2 else (lambda: score_v1(s.gold, s.preds)), error, fragments)

    check()
    assert counts[name] >= EACH.max_examples // 2, dict(counts)


def test_the_oracles_agree_with_scores_worked_out_by_hand():
    """Anchors for the oracles above: F1 of "apple" against "The red apple." is 2 * 1 / (1 + 2); a gold text of
    only an article is no answer in v2 (only "" matches it) and an answer in v1 that nothing but "" matches, with
    F1 0 even then; v2's threshold turns answers into "no answer"."""
    s = Scoring({"a": ["The red apple."], "b": ["The."], "c": []}, {"a": [["red", "apple"]], "b": [[]], "c": []},
                {"a": " (Apple!", "b": "", "c": ""}, {"a": ["apple"], "b": [], "c": []})
    v2 = {"exact": 200 / 3, "f1": (200 / 3 + 200) / 3, "total": 3, "HasAns_exact": 50.0,
          "HasAns_f1": (200 / 3 + 100) / 2, "HasAns_total": 2, "NoAns_exact": 100.0, "NoAns_f1": 100.0,
          "NoAns_total": 1}
    _same(expected_v2(s), v2)
    _same(score_v2(s.gold, s.preds), v2)
    s.na_probs, s.thresh = {"a": 0.75, "b": 0.5, "c": 0.25}, 0.6  # "a" is over the threshold: "no answer", wrong
    v2 |= {"exact": 200 / 3, "f1": 200 / 3, "HasAns_f1": 50.0, "best_exact": 200 / 3, "best_exact_thresh": 0.5,
           "best_f1": (200 / 3 + 200) / 3, "best_f1_thresh": 0.75}
    _same(expected_v2(s), v2)
    _same(score_v2(s.gold, s.preds, s.na_probs, s.thresh), v2)
    del s.gold["c"], s.gold_words["c"]
    v1 = {"exact_match": 50.0, "f1": 100 / 3}
    _same(expected_v1(s), v1)
    _same(score_v1(s.gold, s.preds), v1)
