"""Small SQuAD files the tests write themselves (official layout)."""

from __future__ import annotations

import json
from pathlib import Path

CONTEXT_A = ("The lighthouse at Kerran Point was built in 1871 by the engineer Mara Olsen. " * 3 +
             "Its lamp burned whale oil until 1904, when paraffin replaced it. "
             "The tower is 31 metres tall and stands on a granite ledge above the harbour.")
CONTEXT_B = ("Glass sponges grow in cold water below two hundred metres. " * 2 +
             "Their skeletons are made of silica, and some reefs off British Columbia are nine thousand years old. "
             "Divers rarely see them because of the depth.")
QUESTIONS = (
    (CONTEXT_A, [("Who built the lighthouse?", "Mara Olsen"), ("What fuel did the lamp burn first?", "whale oil"),
                 ("How tall is the tower?", "31 metres"), ("Who painted the tower red?", None)]),
    (CONTEXT_B, [("What are sponge skeletons made of?", "silica"),
                 ("How old are some reefs?", "nine thousand years old"), ("What do glass sponges eat?", None)]),
)


def squad_file(path: Path, *, answers: bool = True, version: str = "v2.0") -> Path:
    """Two long paragraphs (several windows each), seven questions, two of them unanswerable (v2)."""
    data = []
    for n, (context, qas) in enumerate(QUESTIONS):
        items = []
        for j, (question, answer) in enumerate(qas):
            if version == "1.1" and answer is None:
                continue
            item = {"id": f"p{n}q{j}", "question": question}
            if answers:
                item["answers"] = [] if answer is None else [{"text": answer, "answer_start": context.index(answer)}]
                if version == "v2.0":
                    item["is_impossible"] = answer is None
            items.append(item)
        data.append({"title": f"Article {n}", "paragraphs": [{"context": context, "qas": items}]})
    path.write_text(json.dumps({"version": version, "data": data}), encoding="utf-8")
    return path


def contexts_by_id(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return {q["id"]: p["context"] for a in data for p in a["paragraphs"] for q in p["qas"]}
