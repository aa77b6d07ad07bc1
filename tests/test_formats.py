"""File formats beyond plain SQuAD JSON (docs/data.md): gzipped files of every layout, and MRQA 2019's JSON Lines.

The MRQA rows below are worked out by hand from the contexts (offsets counted in the comments); MRQA's character
spans include their last character, ours (answer_start + len(text)) do not.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import tiny_models
from helpers import REPO, read_json, run_cli
from squad_v2 import FEATURES, SquadFormatError, read_squad_file

SAMPLE = REPO / "data" / "sample_squad_v2.json"

#       0         1         2         3         4         5         6
#       0123456789012345678901234567890123456789012345678901234567890
BALL = "Tom gave the red ball to Ann, and Ann gave the red ball back."
FUJI = "Mount Fuji is 3,776 metres high. It last erupted in 1707."
HEADER = {"header": {"dataset": "Toy", "split": "dev"}}


def detected(text: str, *spans: tuple[int, int]) -> dict:
    """A detected answer as MRQA writes it (token spans are not read: any will do)."""
    return {"text": text, "char_spans": [list(s) for s in spans], "token_spans": [[0, 0] for _ in spans]}


def mrqa_lines() -> list[dict]:
    """A header, then two contexts with their questions: "the red ball" is found twice (two spans), "Ann" twice
    but given once, m4's text is lower case (as MRQA's TriviaQA writes it), m5's text is not the span's at all."""
    return [HEADER, {"id": "c1", "context": BALL, "qas": [
        {"qid": "m1", "question": "What did Tom give Ann?", "answers": ["the red ball"],
         "detected_answers": [detected("the red ball", (9, 20), (43, 54))]},
        {"qid": "m2", "question": "Who got the ball?", "answers": ["Ann"],
         "detected_answers": [detected("Ann", (25, 27))]},
    ]}, {"id": "c2", "context": FUJI, "qas": [
        {"qid": "m3", "question": "How high is Mount Fuji?", "answers": ["3,776 metres"],
         "detected_answers": [detected("3,776 metres", (14, 25))]},
        {"qid": "m4", "question": "Which mountain?", "answers": ["mount fuji"],
         "detected_answers": [detected("mount fuji", (0, 9))]},
        {"qid": "m5", "question": "When did it last erupt?", "answers": ["1708"],
         "detected_answers": [detected("1708", (52, 55))]},
    ]}]


def row(qid: str, context: str, question: str, *answers: tuple[str, int]) -> dict:
    return {"id": qid, "title": "Toy", "context": context, "question": question,
            "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]},
            "is_impossible": False}


EXPECTED = [
    row("m1", BALL, "What did Tom give Ann?", ("the red ball", 9), ("the red ball", 43)),  # 9..20, 43..54
    row("m2", BALL, "Who got the ball?", ("Ann", 25)),  # 25..27; the second "Ann" (34) is not given
    row("m3", FUJI, "How high is Mount Fuji?", ("3,776 metres", 14)),  # 14..25
    row("m4", FUJI, "Which mountain?", ("Mount Fuji", 0)),  # the context's case, not the detected text's
    row("m5", FUJI, "When did it last erupt?", ("1707", 52)),  # 52..55 holds 1707: the span wins
]


def write_lines(path: Path, lines: list, compress: bool = False) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def gzipped(source: Path, dest: Path) -> Path:
    dest.write_bytes(gzip.compress(source.read_bytes()))
    return dest


def as_jsonl(path: Path) -> Path:
    """The sample's questions as flat JSON Lines records, one per line."""
    rows = read_squad_file(str(SAMPLE), "validation")[0].to_list()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- gzip ----------------------------------------------------------------------------------------


def test_gzipped_files_read_as_their_plain_versions(tmp_path):
    plain = read_squad_file(str(SAMPLE), "validation")[0].to_list()
    jsonl = as_jsonl(tmp_path / "sample.jsonl")
    for path in (gzipped(SAMPLE, tmp_path / "sample.json.gz"), jsonl, gzipped(jsonl, tmp_path / "sample.jsonl.gz")):
        dataset, report = read_squad_file(str(path), "validation")
        assert dataset.features == FEATURES
        assert dataset.to_list() == plain, path.name
        assert report.questions == 43 and report.source == str(path)
    assert read_squad_file(str(tmp_path / "sample.json.gz"), "train")[1].layout == "official"
    assert read_squad_file(str(tmp_path / "sample.jsonl.gz"), "train")[1].layout == "jsonl"


def test_gzip_is_known_by_its_bytes_and_keeps_text_mode_line_ends(tmp_path):
    """A gzipped file without .gz in its name is still read; CR LF line ends are read as plain files read them."""
    crlf = as_jsonl(tmp_path / "sample.jsonl").read_text(encoding="utf-8").replace("\n", "\r\n")
    (tmp_path / "renamed.jsonl").write_bytes(gzip.compress(crlf.encode()))
    assert read_squad_file(str(tmp_path / "renamed.jsonl"), "validation")[0].to_list() == \
        read_squad_file(str(SAMPLE), "validation")[0].to_list()


@pytest.mark.parametrize("cut, words", [
    (lambda data: data[: len(data) // 2], "the gzip file is cut short"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "the gzip file is damaged (Incorrect length of data produced)"),
    (lambda data: data[:200] + bytes(b ^ 0xFF for b in data[200:210]) + data[210:], "the gzip file is damaged"),
])
def test_truncated_or_damaged_gzip_is_one_line_with_the_fix(tmp_path, cut, words):
    path = tmp_path / "train.json.gz"
    path.write_bytes(cut(gzip.compress(SAMPLE.read_bytes())))
    with pytest.raises(SquadFormatError) as err:
        read_squad_file(str(path), "train")
    message = str(err.value)
    assert message.startswith(f"{path}: {words}"), message
    assert message.endswith("; download or copy it again, or give it uncompressed") and "\n" not in message


def test_a_plain_file_named_gz_says_to_rename_it(tmp_path):
    path = tmp_path / "dev.json.gz"
    path.write_bytes(SAMPLE.read_bytes())
    with pytest.raises(SquadFormatError) as err:
        read_squad_file(str(path), "validation")
    assert str(err.value) == (f"{path}: named .gz but not gzip-compressed (it starts with b'{{\\n \"vers'); if it is "
                              "plain JSON or JSON Lines, remove .gz from its name, else download or copy it again")


# ---- MRQA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["jsonl", "jsonl.gz"])
def test_mrqa_file_gives_one_answer_per_span(tmp_path, compress, caplog):
    path = write_lines(tmp_path / ("SQuAD.jsonl.gz" if compress else "SQuAD.jsonl"), mrqa_lines(), compress)
    with caplog.at_level(logging.INFO, logger="squad_v2"):
        dataset, report = read_squad_file(str(path), "train")
    assert dataset.features == FEATURES
    assert dataset.to_list() == EXPECTED
    assert (report.layout, report.version, report.articles, report.paragraphs, report.questions) == \
        ("mrqa", None, 1, 2, 5)
    assert (report.unanswerable, report.dropped_answers, report.dropped_questions) == (0, 0, 0)
    # m4 differs only in case (MRQA's own matching): counted, no problem; m5's text is another number: a problem
    assert report.problems == ['line 3, qas[2].detected_answers[0].char_spans[0] [52, 55]: holds "1707", not its '
                               'detected answer\'s text "1708"; the context\'s text is used']
    warning = next(r.getMessage() for r in caplog.records if "MRQA answer span" in r.getMessage())
    assert "2 MRQA answer span(s) hold other text than their detected answer's \"text\", 1 of them only in case" \
        in warning


def test_mrqa_files_put_together_keep_each_datasets_name_and_need_no_first_header(tmp_path):
    """`cat NewsQA.jsonl.gz SQuAD.jsonl.gz` (two gzip members): each header names the questions after it. A file
    that lost its header line is still MRQA (its lines hold "qas" beside "context"), with no title."""
    lines = mrqa_lines()
    news = [{"header": {"dataset": "NewsQA", "split": "dev"}}, {**lines[1], "qas": [{**lines[1]["qas"][0],
                                                                                    "qid": "n1"}]}]
    both = tmp_path / "both.jsonl.gz"
    both.write_bytes(write_lines(tmp_path / "a.gz", news, True).read_bytes() +
                     write_lines(tmp_path / "b.gz", lines, True).read_bytes())
    dataset, _ = read_squad_file(str(both), "validation")
    assert list(zip(dataset["id"], dataset["title"])) == [("n1", "NewsQA")] + [(r["id"], "Toy") for r in EXPECTED]
    headless, report = read_squad_file(str(write_lines(tmp_path / "headless.jsonl", lines[1:])), "validation")
    assert report.layout == "mrqa"
    assert headless.to_list() == [{**r, "title": ""} for r in EXPECTED]


def _broken(lines: list, edit) -> list:
    lines = json.loads(json.dumps(lines))
    edit(lines)
    return lines


def _span(line: int, span: list) -> Callable[[list], None]:
    def edit(lines: list) -> None:
        lines[line]["qas"][0]["detected_answers"][0]["char_spans"][0] = span
    return edit


@pytest.mark.parametrize("edit, expected", [
    (lambda lines: lines.__setitem__(2, '{"context": "Mount Fuji", "qas": ['),
     'line 3: not valid JSON at column 35 (Expecting value); JSON Lines need one complete record per line'),
    (lambda lines: lines[1].pop("qas"), 'line 2: no "qas"; add a list "qas" there'),
    (lambda lines: lines[2].pop("context"), 'line 3: no "context"; add a string "context" there'),
    (_span(2, [50, 70]), 'line 3, qas[0].detected_answers[0].char_spans[0]: [50, 70] is outside the context (its '
                         'characters are 0 to 56); give offsets into this line\'s "context" (MRQA\'s spans include '
                         'their last character: end = start + len(text) - 1) (question id m3)'),
    (_span(2, [52, 57]), "line 3, qas[0].detected_answers[0].char_spans[0]: [52, 57] is outside the context"),
    (_span(1, [20, 9]), "line 2, qas[0].detected_answers[0].char_spans[0]: [20, 9] ends before it starts; give "
                        "[start, end] with end >= start (MRQA's spans include their last character: end = start + "
                        "len(text) - 1) (question id m1)"),
    (_span(1, [9]), "line 2, qas[0].detected_answers[0].char_spans[0]: [9] is no [start, end] pair; give two offsets"),
    (_span(1, [9, "20"]), 'line 2, qas[0].detected_answers[0].char_spans[0][1]: is a string; make it an integer '
                          '(question id m1)'),
    (lambda lines: lines[1]["qas"][1].pop("qid"), 'line 2, qas[1]: no "qid"; add a string "qid" there'),
    (lambda lines: lines[1]["qas"][1].pop("question"), 'line 2, qas[1]: no "question"; add a string "question" '
                                                        'there (question id m2)'),
    (lambda lines: lines[1]["qas"][1]["detected_answers"][0].pop("char_spans"),
     'line 2, qas[1].detected_answers[0]: no "char_spans"; add a list "char_spans" there (question id m2)'),
    (lambda lines: lines[0].__setitem__("header", "SQuAD"), 'line 1: "header": is a string; make it an object'),
    (lambda lines: lines.append([1, 2]), "line 4: is a list; make it an object"),
])
def test_broken_mrqa_line_is_one_line_naming_it(tmp_path, edit, expected):
    path = write_lines(tmp_path / "dev.jsonl.gz", _broken(mrqa_lines(), edit), compress=True)
    with pytest.raises(SquadFormatError) as err:
        read_squad_file(str(path), "validation")
    message = str(err.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message


def test_mrqa_question_without_detected_answers_is_dropped_from_training(tmp_path):
    """MRQA has no unanswerable questions: one whose detected answers are empty is answerable with no valid answer,
    as an empty "answers" list is elsewhere (dropped from training data, kept in evaluation data)."""
    lines = _broken(mrqa_lines(), lambda lines: lines[1]["qas"][1].__setitem__("detected_answers", []))
    path = str(write_lines(tmp_path / "train.jsonl", lines))
    dataset, report = read_squad_file(path, "train")
    assert dataset["id"] == ["m1", "m3", "m4", "m5"] and report.dropped_questions == 1
    assert report.problems[0] == "line 2, qas[1]: answerable question with no valid answers"
    assert read_squad_file(path, "validation")[0]["id"] == ["m1", "m2", "m3", "m4", "m5"]


# ---- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")


@pytest.mark.slow  # two short training runs
@pytest.mark.parametrize("kind", ["mrqa", "squad-gz"])
def test_mrqa_and_gzipped_squad_train_and_evaluate(bert, tmp_path, capsys, kind):
    if kind == "mrqa":
        data, flags, ids = write_lines(tmp_path / "SQuAD.jsonl.gz", mrqa_lines(), True), [], [r["id"] for r in EXPECTED]
    else:
        data, flags = gzipped(SAMPLE, tmp_path / "dev.json.gz"), ["--version_2_with_negative"]
        ids = read_squad_file(str(SAMPLE), "validation")[0]["id"]
    out = tmp_path / "out"
    code, err = run_cli(["--model_name_or_path", bert, "--train_file", data, "--validation_file", data, "--do_train",
                         "--do_eval", *flags, "--max_seq_length", "64", "--doc_stride", "16", "--max_steps", "2",
                         "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none",
                         "--use_cpu", "true", "--output_dir", out, "--cache_dir", tmp_path / "cache"], capsys)
    assert code == 0, err[-3000:]
    assert sorted(read_json(out / "eval_predictions.json")) == sorted(ids)
    assert "eval_f1" in read_json(out / "all_results.json")
