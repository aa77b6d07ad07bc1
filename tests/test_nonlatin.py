"""Non-Latin text through the windows: each gold answer is given back by its training labels.

A question's answer is recovered when every window labelled with it (qakit/windows.py's start and end token) maps
back, through the evaluation windows' offsets as answers are made (WindowIndex), to exactly its text in the
context, and some window is. Two tokenizers: CANINE's, one token per character (tests/tiny_models.py; no offsets of its own, so they
come from qakit/alignment.py), and MiniLM's WordPiece, which lowercases and strips accents (its offsets point
into the original text, so the answers are compared unchanged, as tests/test_windows.py does on dev-v2.0).

Every answer of XQuAD's Chinese and German (../shared/data/xquad) and of small hand-made Arabic and Devanagari
contexts is checked; the answers that cannot be recovered are asserted exactly, each with its reason, worked out
by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

import squad_v2
import tiny_models
from helpers import SHARED_SQUAD, eval_features
from qakit.family import QAFamily, prepare_model
from qakit.windows import WindowIndex, prepare_train_features

XQUAD = SHARED_SQUAD.parent / "xquad"
MAX_SEQ_LENGTH, DOC_STRIDE = 384, 128  # the tool's defaults, as test_windows.py uses them

# Tokenizer "wordpiece" is MiniLM's; "char" is CANINE's.
XQUAD_LOST = {
    ("zh", "wordpiece"): {},  # each CJK character is a WordPiece token of its own: every boundary is a token's
    ("zh", "char"): {},
    ("de", "wordpiece"): {
        # XQuAD writes "keineTentakel" (no space: a translation slip); WordPiece makes kei ##net ##ent ##ake ##l of
        # it, so the answer's first character T is the last of the piece "neT", and its label starts at n
        "5725c337271a42140099d166": 'starts inside the token "neT"',
    },
    ("de", "char"): {
        # "Zwei wesentliche Unterschiede ... Netzwerkkern" is 141 characters, so 141 tokens (169 to 309); next to
        # its 76-token question a window holds 305 context tokens, and the windows are (0, 305) and (177, 482):
        # an answer longer than the 128-token overlap that straddles the boundary is wholly in neither
        "57263c78ec44d21400f3dc7c": "no window holds it whole",
    },
}

ARABIC = ("القاهرة هي عاصمة مصر وأكبر مدنها. يمر نهر النيل بالقاهرة، وتقع فيها جامعة الأزهر التي تأسست عام ٩٧٠ م. "
          "افتُتح المتحف المصري الكبير عام \u200f2025\u200f. كتب نجيب محفوظ رواياته عن حياةِ القاهرةِ.")
HINDI = ("भारत की राजधानी नई दिल्ली है। भारत के पहले प्रधानमंत्री जवाहरलाल नेहरू थे। गंगा नदी हिमालय से निकलती है "
         "और बंगाल की खाड़ी में गिरती है। संविधान २६ जनवरी १९५० को लागू हुआ।")
# (id, context, question, answer, where it starts: the n-th occurrence of the answer's text, counted from 0)
HAND_MADE = [
    ("ar1", ARABIC, "ما هي عاصمة مصر؟", "القاهرة", 0),
    ("ar2", ARABIC, "أي نهر يمر بالقاهرة؟", "نهر النيل", 0),
    ("ar3", ARABIC, "متى تأسست جامعة الأزهر؟", "٩٧٠", 0),  # Arabic-Indic digits
    ("ar4", ARABIC, "بأي مدينة يمر النيل؟", "القاهرة", 1),  # inside بالقاهرة ("by Cairo"), after the prefix ب
    ("ar5", ARABIC, "متى افتتح المتحف المصري الكبير؟", "2025", 0),  # left-to-right digits between RLM marks
    ("ar6", ARABIC, "عن أي مدينة كتب نجيب محفوظ؟", "القاهرةِ", 0),  # ends with a kasra (U+0650), a vowel mark
    ("hi1", HINDI, "भारत की राजधानी क्या है?", "नई दिल्ली", 0),
    ("hi2", HINDI, "भारत के पहले प्रधानमंत्री कौन थे?", "जवाहरलाल नेहरू", 0),  # ends with the vowel sign ू (U+0942)
    ("hi3", HINDI, "गंगा नदी कहाँ से निकलती है?", "हिमालय", 0),
    ("hi4", HINDI, "गंगा कहाँ गिरती है?", "बंगाल की खाड़ी", 0),  # ड़ is ड + nukta (U+093C), a combining mark
    ("hi5", HINDI, "संविधान कब लागू हुआ?", "२६ जनवरी १९५०", 0),  # Devanagari digits
]
HAND_MADE_LOST = {
    # MiniLM splits Arabic and Devanagari words into single letters (ar4's answer starts at one), but its
    # accent stripping drops the marks of Unicode category Mn: the kasra of ar6 and the ू of hi2 end their answers,
    # no token covers them, and the label runs on to the next token ("." and the थ of थे).
    "wordpiece": {"ar6": 'ends with "\\u0650", which no token covers',
                  "hi2": 'ends with "\\u0942", which no token covers'},
    "char": {},
}


@pytest.fixture(scope="module")
def canine_family() -> QAFamily:
    model, tokenizer = tiny_models.tiny_model("Canine")
    prepare_model(model, tokenizer)
    return QAFamily.detect(model, tokenizer, max_seq_length=MAX_SEQ_LENGTH)


def family_of(tokenizer: str, request: pytest.FixtureRequest) -> QAFamily:
    """The tokenizer's family; only MiniLM's needs its package (the test skips without it)."""
    return request.getfixturevalue("minilm_family" if tokenizer == "wordpiece" else "canine_family")


def recovered(batch: dict, family: QAFamily) -> dict[int, set[str]]:
    """Question -> the texts its labelled windows give back (each window that holds the answer whole is labelled);
    questions labelled in no window are absent."""
    train = prepare_train_features(batch, family, MAX_SEQ_LENGTH, DOC_STRIDE)
    index = WindowIndex.from_features(eval_features(batch, family, MAX_SEQ_LENGTH, DOC_STRIDE))
    first, last = np.array(train["start_positions"]), np.array(train["end_positions"])
    windows = np.flatnonzero(first != np.array(train["null_index"]))
    texts: dict[int, set[str]] = {}
    for w, s, t in zip(windows.tolist(), *(a.tolist() for a in index.chars(windows, first[windows], last[windows]))):
        e = int(index.example_index[w])
        texts.setdefault(e, set()).add(batch["context"][e][s:t])
    return texts


def why_lost(context: str, start: int, text: str, labelled: set[str], family: QAFamily) -> str:
    """Why the labels do not give the answer back (`labelled`: what they give; empty: no window is labelled with
    it), from the context's tokens."""
    if not labelled:
        return "no window holds it whole"
    _, starts, ends = family.encode([context])[0]
    end = start + len(text)
    around = {at: next((context[s:e] for s, e in zip(starts, ends) if s < at < e), None) for at in (start, end)}
    if around[start] is not None:
        return f'starts inside the token "{around[start]}"'
    if around[end] is not None:
        return f'ends inside the token "{around[end]}"'
    if end not in ends:
        uncovered = context[max(e for e in ends if e < end):end].encode("unicode_escape").decode()
        return f'ends with "{uncovered}", which no token covers'
    return f"labelled {sorted(labelled)}, for no reason found here"


def lost_answers(batch: dict, family: QAFamily) -> dict[str, str]:
    """Question id -> why its gold answer is not what its labels give back."""
    got = recovered(batch, family)
    lost = {}
    for e, (qid, context, answers) in enumerate(zip(batch["id"], batch["context"], batch["answers"])):
        text, start = answers["text"][0], answers["answer_start"][0]
        if got.get(e, set()) != {text}:
            lost[qid] = why_lost(context, start, text, got.get(e, set()), family)
    return lost


@pytest.fixture(scope="module", params=["zh", "de"])
def xquad(request) -> tuple[str, dict]:
    path = XQUAD / f"xquad.{request.param}.json"
    if not path.is_file():
        pytest.skip(f"{path} is not here (XQuAD lives in ../shared/data/xquad)")
    batch = squad_v2.read_squad_file(str(path), "validation")[0][:]
    assert len(batch["id"]) == 1190 and all(len(a["text"]) == 1 for a in batch["answers"]), "one answer each"
    return request.param, batch


@pytest.mark.slow  # every XQuAD question, 1,190 per language
@pytest.mark.parametrize("tokenizer", ["wordpiece", "char"])
def test_xquad_answers_come_back_from_their_labels(xquad, tokenizer, request):
    language, batch = xquad
    assert lost_answers(batch, family_of(tokenizer, request)) == XQUAD_LOST[language, tokenizer]


def _hand_made() -> dict:
    batch = {"id": [], "question": [], "context": [], "answers": []}
    for qid, context, question, answer, nth in HAND_MADE:
        start = -1
        for _ in range(nth + 1):
            start = context.index(answer, start + 1)
        batch["id"].append(qid)
        batch["question"].append(question)
        batch["context"].append(context)
        batch["answers"].append({"text": [answer], "answer_start": [start]})
    return batch


@pytest.mark.parametrize("tokenizer", ["wordpiece", "char"])
def test_arabic_and_devanagari_answers_come_back_from_their_labels(tokenizer, request):
    assert lost_answers(_hand_made(), family_of(tokenizer, request)) == HAND_MADE_LOST[tokenizer]


def test_what_the_lost_answers_are_labelled(minilm_family):
    """The labels of the lost hand-made answers, read back: the span runs on past the mark no token covers."""
    batch = _hand_made()
    got = recovered(batch, minilm_family)
    assert got[batch["id"].index("ar6")] == {"القاهرةِ."}
    assert got[batch["id"].index("hi2")] == {"जवाहरलाल नेहरू थ"}
