"""Tests for squad_v2.py: one schema from every layout, and errors that say where and how to fix."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

import squad_v2
from helpers import REPO, SHARED_SQUAD
from squad_v2 import FEATURES, SquadFormatError, SquadHubError, load_squad, read_squad_file

CAT = "The cat sat on the mat while the dog slept by the door."
SUN = "The sun rises in the east and sets in the west."
TEA = "Green tea is made from leaves that are not oxidised."
# (title, [(context, [(id, question, [(answer text, answer_start)])])]); no answers = unanswerable
CONTENT = [
    ("Animals", [
        (CAT, [
            ("a1", "Where did the cat sit?", [("the mat", 15)]),
            ("a2", "Where did the dog sleep?", [("by the door", 43), ("the door", 46)]),
            ("a3", "What colour was the cat?", []),
        ]),
    ]),
    ("Nature", [
        (SUN, [("n1", "Where does the sun rise?", [("the east", 17)])]),
        (TEA, [("n2", "Who first made green tea?", [])]),
    ]),
]


def official(content: list, version: str = "v2.0") -> dict:
    """The nested layout as distributed; v1.1 has no is_impossible and no unanswerable questions."""
    def qa(qid: str, question: str, answers: list) -> dict:
        record = {"id": qid, "question": question,
                  "answers": [{"text": t, "answer_start": s} for t, s in answers]}
        if version == "v2.0":
            record["is_impossible"] = not answers
            if not answers:
                record["plausible_answers"] = [{"text": "The", "answer_start": 0}]
        return record

    return {"version": version, "data": [
        {"title": title, "paragraphs": [
            {"context": context, "qas": [qa(*q) for q in qas]} for context, qas in paragraphs]}
        for title, paragraphs in content]}


def flat(content: list) -> list[dict]:
    """HF's flat records with answers as parallel lists."""
    return [
        {"id": qid, "title": title, "context": context, "question": question,
         "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]}}
        for title, paragraphs in content for context, qas in paragraphs for qid, question, answers in qas
    ]


def answerable(content: list) -> list:
    """The same content without unanswerable questions, as v1.1 holds."""
    return [(title, [(c, [q for q in qas if q[2]]) for c, qas in paragraphs]) for title, paragraphs in content]


def write_json(tmp_path: Path, name: str, value: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(value, indent=1))
    return str(path)


def write_jsonl(tmp_path: Path, name: str, records: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def layouts(tmp_path: Path) -> dict[str, str]:
    """The same v2 content written in every accepted layout."""
    return {
        "official": write_json(tmp_path, "nested.json", official(CONTENT)),
        "flat": write_json(tmp_path, "flat.json", {"version": "v2.0", "data": flat(CONTENT)}),
        "list": write_json(tmp_path, "list.json", flat(CONTENT)),
        "jsonl": write_jsonl(tmp_path, "records.txt", flat(CONTENT)),
    }


# --- layouts and schema -----------------------------------------------------------------------


def test_every_layout_gives_same_schema_and_records(layouts: dict[str, str]) -> None:
    read = {name: read_squad_file(path, "validation") for name, path in layouts.items()}
    expected = read["official"][0].to_list()
    for name, (dataset, _) in read.items():
        assert dataset.features == FEATURES, name
        assert dataset.to_list() == expected, name
    assert [r["id"] for r in expected] == ["a1", "a2", "a3", "n1", "n2"]
    assert expected[1]["answers"] == {"text": ["by the door", "the door"], "answer_start": [43, 46]}


def test_reports_agree_across_layouts(layouts: dict[str, str]) -> None:
    layout_names = {"official": "official", "flat": "flat", "list": "flat", "jsonl": "jsonl"}
    for name, path in layouts.items():
        report = read_squad_file(path, "train")[1]
        assert report.layout == layout_names[name]
        assert report.source == path
        assert (report.articles, report.paragraphs, report.questions, report.unanswerable) == (2, 3, 5, 2)
        assert report.longest_context == len(CAT)
        assert report.has_answers
        assert (report.problems, report.dropped_answers, report.dropped_questions) == ([], 0, 0)
    assert read_squad_file(layouts["official"], "train")[1].version == "v2.0"
    assert read_squad_file(layouts["jsonl"], "train")[1].version is None


def test_is_impossible_from_flag_or_from_empty_answers(layouts: dict[str, str]) -> None:
    for path in layouts.values():
        assert read_squad_file(path, "train")[0]["is_impossible"] == [False, False, True, False, True]


def test_v11_matches_flat_records_of_same_content(tmp_path: Path) -> None:
    content = answerable(CONTENT)
    v11, report = read_squad_file(write_json(tmp_path, "v11.json", official(content, "1.1")), "train")
    flat_ds, _ = read_squad_file(write_jsonl(tmp_path, "v11.jsonl", flat(content)), "train")
    assert v11.to_list() == flat_ds.to_list()
    assert not any(v11["is_impossible"])
    assert (report.version, report.questions, report.unanswerable) == ("1.1", 3, 0)


def test_predict_only_test_file(tmp_path: Path) -> None:
    records = [{k: v for k, v in r.items() if k != "answers"} for r in flat(CONTENT)]
    path = write_jsonl(tmp_path, "test.jsonl", records)
    dataset, report = read_squad_file(path, "test")
    assert not report.has_answers
    assert dataset.features == FEATURES
    assert dataset["answers"] == [{"text": [], "answer_start": []}] * 5
    assert not any(dataset["is_impossible"])
    for role in ("train", "validation"):
        with pytest.raises(SquadFormatError, match="--test_file"):
            read_squad_file(path, role)


def test_answers_on_some_questions_only(tmp_path: Path) -> None:
    records = flat(CONTENT)
    del records[3]["answers"]
    path = write_json(tmp_path, "mixed.json", {"data": records})
    with pytest.raises(SquadFormatError, match=r'data\[3\]: no "answers"'):
        read_squad_file(path, "test")


# --- broken files -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(SquadFormatError, match="no such file") as err:
        read_squad_file(path, "train")
    assert path in str(err.value) and "--train_file" in str(err.value)


def test_bad_json_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n "data": [\n  {"id": "x",,}\n ]\n}\n')
    with pytest.raises(SquadFormatError, match="not valid JSON at line 3, column 14") as err:
        read_squad_file(str(path), "train")
    assert str(path) in str(err.value)


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(flat(CONTENT)[0]) + "\n\n" + '{"id": "x", oops}\n')
    with pytest.raises(SquadFormatError, match="line 3: not valid JSON"):
        read_squad_file(str(path), "train")


def test_unknown_layout_lists_accepted_ones(tmp_path: Path) -> None:
    path = write_json(tmp_path, "odd.json", {"rows": [1, 2]})
    with pytest.raises(SquadFormatError, match='unknown layout .*"rows"') as err:
        read_squad_file(path, "train")
    assert "official SQuAD" in str(err.value) and "JSON Lines" in str(err.value)


def test_missing_field_names_the_place(tmp_path: Path) -> None:
    nested = official(CONTENT)
    del nested["data"][1]["paragraphs"][1]["qas"][0]["question"]
    path = write_json(tmp_path, "dev.json", nested)
    with pytest.raises(SquadFormatError) as err:
        read_squad_file(path, "validation")
    assert str(err.value).startswith(f'{path}: data[1].paragraphs[1].qas[0]: no "question"; add')


def test_flat_record_without_question_is_still_flat(tmp_path: Path) -> None:
    records = flat(CONTENT)
    del records[0]["question"]
    with pytest.raises(SquadFormatError, match=r'data\[0\]: no "question"'):
        read_squad_file(write_json(tmp_path, "x.json", {"data": records}), "train")


def test_no_questions(tmp_path: Path) -> None:
    with pytest.raises(SquadFormatError, match="no questions found"):
        read_squad_file(write_json(tmp_path, "x.json", {"version": "v2.0", "data": []}), "train")


def test_missing_field_in_jsonl_names_the_line(tmp_path: Path) -> None:
    records = flat(CONTENT)
    del records[1]["context"]
    with pytest.raises(SquadFormatError, match='line 2: no "context"'):
        read_squad_file(write_jsonl(tmp_path, "x.jsonl", records), "train")


def test_wrong_type_names_the_place(tmp_path: Path) -> None:
    nested = official(CONTENT)
    nested["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = "44"
    with pytest.raises(SquadFormatError, match=r'qas\[1\]\.answers\[0\]: "answer_start": is a string; make it'):
        read_squad_file(write_json(tmp_path, "x.json", nested), "train")


def test_duplicate_id(tmp_path: Path) -> None:
    records = flat(CONTENT)
    records[4]["id"] = "a2"
    with pytest.raises(SquadFormatError, match=r'\[4\]: duplicate id "a2" \(first at \[1\]\)'):
        read_squad_file(write_json(tmp_path, "x.json", records), "train")


@pytest.mark.parametrize("key", ["question", "context"])
def test_empty_question_or_context(tmp_path: Path, key: str) -> None:
    records = flat(CONTENT)
    records[2][key] = "  "
    with pytest.raises(SquadFormatError, match=rf'data\[2\]: empty "{key}"'):
        read_squad_file(write_json(tmp_path, "x.json", {"data": records}), "train")


def test_impossible_with_answers(tmp_path: Path) -> None:
    nested = official(CONTENT)
    nested["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = True
    with pytest.raises(SquadFormatError, match='"is_impossible" is true but "answers" is not empty'):
        read_squad_file(write_json(tmp_path, "x.json", nested), "validation")


def bad_offsets(tmp_path: Path) -> str:
    """a1 has its only answer off by one; a2 has one of its two answers off."""
    nested = official(CONTENT)
    qas = nested["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] = 16
    qas[1]["answers"][1]["answer_start"] = 40
    return write_json(tmp_path, "offsets.json", nested)


def test_bad_answer_start_dropped_from_train(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="squad_v2"):
        dataset, report = read_squad_file(bad_offsets(tmp_path), "train")
    assert (report.dropped_answers, report.dropped_questions, report.questions) == (2, 1, 4)
    assert dataset["id"] == ["a2", "a3", "n1", "n2"]
    assert dataset[0]["answers"] == {"text": ["by the door"], "answer_start": [43]}
    assert any('qas[0].answers[0]: answer_start 16 does not point at "the mat"' in p for p in report.problems)
    assert "dropped 2 answers and 1 questions" in caplog.text


def test_bad_answer_start_kept_in_validation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="squad_v2"):
        dataset, report = read_squad_file(bad_offsets(tmp_path), "validation")
    assert (report.dropped_answers, report.dropped_questions, report.questions) == (0, 0, 5)
    assert len(report.problems) == 2
    assert dataset[0]["answers"] == {"text": ["the mat"], "answer_start": [16]}
    assert dataset[1]["answers"]["answer_start"] == [43, 40]
    assert "never altered" in caplog.text


def test_bad_role_is_a_programming_error(layouts: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="role must be one of"):
        read_squad_file(layouts["official"], "dev")


# --- load_squad ---------------------------------------------------------------------------------


def hub_like(content: list) -> datasets.Dataset:
    """A dataset shaped like HF's squad_v2 on the hub: no is_impossible, plus an extra column."""
    records = flat(content)
    features = datasets.Features({k: v for k, v in FEATURES.items() if k != "is_impossible"})
    dataset = datasets.Dataset.from_list(records, features=features)
    return dataset.add_column("extra", [0] * len(records))


def test_load_squad_from_local_files(layouts: dict[str, str], tmp_path: Path) -> None:
    test_path = write_jsonl(tmp_path, "t.jsonl", [{"id": "t1", "context": SUN, "question": "Why?"}])
    splits, reports = load_squad(None, None, layouts["jsonl"], layouts["official"], test_path)
    assert list(splits) == ["train", "validation", "test"] == list(reports)
    assert all(split.features == FEATURES for split in splits.values())
    assert (reports["train"].layout, reports["test"].has_answers) == ("jsonl", False)


def test_load_squad_from_hub_with_local_override(monkeypatch: pytest.MonkeyPatch, layouts: dict[str, str]) -> None:
    calls = []

    def fake_load_dataset(name: str, config: str | None, **kwargs: object) -> datasets.DatasetDict:
        calls.append((name, config, kwargs))
        return datasets.DatasetDict({"train": hub_like(CONTENT), "validation": hub_like(CONTENT)})

    monkeypatch.setattr(squad_v2.datasets, "load_dataset", fake_load_dataset)
    splits, reports = load_squad("squad_v2", None, None, layouts["flat"], None, cache_dir="c", token=True, revision="r")
    assert calls == [("squad_v2", None, {"cache_dir": "c", "token": True, "revision": "r"})]
    assert list(splits) == ["train", "validation"]
    assert splits["train"].features == FEATURES
    assert splits["train"]["is_impossible"] == [False, False, True, False, True]
    assert (reports["train"].layout, reports["train"].source) == ("hub", "squad_v2[train]")
    assert reports["validation"].layout == "flat"


def test_hub_dataset_without_squad_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    other = datasets.Dataset.from_dict({"id": ["1"], "text": ["x"]})
    monkeypatch.setattr(squad_v2.datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": other}))
    with pytest.raises(SquadHubError, match=r"imdb\[train\]: no column context, question"):
        load_squad("imdb", None, None, None, None)


def test_load_squad_needs_some_data() -> None:
    with pytest.raises(SquadFormatError, match="--dataset_name"):
        load_squad(None, None, None, None, None)


def test_hub_unreachable_points_to_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'squad_v2' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(squad_v2.datasets, "load_dataset", offline)
    with pytest.raises(SquadHubError, match="cannot reach the hub.*--train_file/--validation_file/--test_file"):
        load_squad("squad_v2", None, None, None, None)


@pytest.mark.slow
def test_hub_offline_for_real(tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE=1 and an empty cache, datasets' own error is translated."""
    code = "import squad_v2\ntry:\n    squad_v2.load_squad('squad_v2', None, None, None, None)\n" \
           "except squad_v2.SquadHubError as err:\n    print('HUB ERROR', err)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert "HUB ERROR squad_v2: cannot reach the hub" in result.stdout, result.stderr


# --- command line -------------------------------------------------------------------------------


def run_cli(*files: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "squad_v2.py", *files], cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
def test_cli_summarises_sample() -> None:
    result = run_cli("data/sample_squad_v2.json")
    assert result.returncode == 0, result.stderr
    assert "official layout, version v2.0" in result.stdout
    assert "questions        43" in result.stdout and "problems         0" in result.stdout


@pytest.mark.slow
def test_cli_reports_problems(tmp_path: Path) -> None:
    result = run_cli(bad_offsets(tmp_path))
    assert result.returncode == 0
    assert "problems         2" in result.stdout and "answer_start 16" in result.stdout


@pytest.mark.slow
def test_cli_broken_file_fails_cleanly(tmp_path: Path) -> None:
    nested = official(CONTENT)
    del nested["data"][0]["paragraphs"][0]["qas"][2]["id"]
    path = write_json(tmp_path, "broken.json", nested)
    result = run_cli("data/sample_squad_v2.json", path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    expected = f'error: {path}: data[0].paragraphs[0].qas[2]: no "id"; add a string or integer "id" there'
    assert result.stderr.strip() == expected
    assert "questions        43" in result.stdout


# --- shipped sample and real data ---------------------------------------------------------------


def test_sample_dataset_is_clean() -> None:
    path = REPO / "data" / "sample_squad_v2.json"
    dataset, report = read_squad_file(str(path), "validation")
    assert 35 <= report.questions <= 45
    assert 0.25 <= report.unanswerable / report.questions <= 0.4
    assert 4 <= report.paragraphs <= 6
    assert report.problems == []
    raw = json.loads(path.read_text())
    for article in raw["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                assert bool(qa.get("plausible_answers")) == qa["is_impossible"], qa["id"]
                for a in qa.get("plausible_answers", []):
                    assert context[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]


@pytest.mark.parametrize(
    "name, counts",
    [("dev-v2.0.json", (35, 1204, 11873, 5945)), ("dev-v1.1.json", (48, 2067, 10570, 0))],
)
def test_real_squad_dev_files(name: str, counts: tuple[int, int, int, int]) -> None:
    path = SHARED_SQUAD / name
    if not path.exists():
        pytest.skip(f"{path} not present (the real SQuAD files live outside the repo)")
    dataset, report = read_squad_file(str(path), "validation")
    assert (report.articles, report.paragraphs, report.questions, report.unanswerable) == counts
    assert report.layout == "official" and report.has_answers and len(dataset) == counts[2]
