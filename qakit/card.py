"""The model card: HF Trainer's README.md made to travel, plus what this run measured, its threshold and command.

A card goes to the hub with the model, so it names nothing of this machine: the base model by its hub id (as
given, or as its folder records it) or else by its folder's name, data files by their names, and the command
with paths outside the working folder cut to their names. `card_kwargs` are the arguments HF's run_qa.py passes
to `create_model_card` / `push_to_hub`; `RunCard.sections` is appended by
`QuestionAnsweringTrainer.create_model_card`, and `finish_card` then rewrites HF's part: `base_model` and
`model-index` (the results in the form the hub reads, one per evaluation set) in the front matter, and HF's
"More information needed" sections filled from what the run knows.
"""

from __future__ import annotations

import json
import functools
import logging
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.utils import HFValidationError, validate_repo_id

from qakit.evalsets import run_eval_entries
from qakit.files import write_atomic
from qakit.outputs import is_model_folder

logger = logging.getLogger(__name__)

HUB = "https://huggingface.co/"
MISSING = "More information needed"  # HF's placeholder, never left where the run knows the answer
ODDS = {"span": "null score minus best span score", "beam": "the answerability logit",
        "generate": "log-probability of the empty answer minus the best answer's"}
HEADS = {"span": "a start and an end logit per token; the answer is the best-scoring valid span of the context",
         "beam": "beam search over start positions, then over ends given each start, with an answerability logit",
         "generate": "an encoder-decoder writes the answer from `question: Q context: C`; the empty answer is "
                     "scored beside the best ones"}
SCORE_KEYS = ("exact_match", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")
METRIC_NAMES = {"exact_match": "Exact Match", "exact": "Exact Match", "f1": "F1",
                "HasAns_exact": "Exact Match (answerable)", "HasAns_f1": "F1 (answerable)",
                "NoAns_exact": "Exact Match (unanswerable)", "NoAns_f1": "F1 (unanswerable)",
                "best_exact": "Exact Match at the best threshold", "best_f1": "F1 at the best threshold"}
FEW = 1000  # fewer evaluation questions than this: figures too noisy to set beside published ones
PUBLISHED = "SQuAD 2.0's development set has 11,873 questions, SQuAD 1.1's 10,570"


# ---- the base model, by a name that travels -------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """The model a run started from, as its card names it: never a path, and a link only to a real hub id."""

    name: str  # its hub id, else its folder's name
    hub_id: str | None = None  # its own hub id
    origin: str | None = None  # the hub id its folder says it was made from (its card's base_model, its config)

    @property
    def tag(self) -> str | None:
        """The front matter's base_model, which the hub links into the model tree."""
        return self.hub_id or self.origin

    def markdown(self) -> str:
        if self.hub_id:
            return _link(self.hub_id)
        made = f", made from {_link(self.origin)}" if self.origin else ""
        return f"`{self.name}` (a local model{made})"


def _link(hub_id: str) -> str:
    return f"[{hub_id}]({HUB}{hub_id})"


def base_model(model_name_or_path: str) -> BaseModel:
    """A hub id as given, or the one a local folder records (the hub cache's folder name, the folder's own card),
    else the folder's name with the hub id it was made from, if its card or config records one."""
    folder = Path(model_name_or_path)
    if not folder.exists():
        hub_id = model_name_or_path if _is_hub_id(model_name_or_path) else None
        return BaseModel(hub_id or folder.name, hub_id=hub_id)
    folder = folder.resolve()
    card = _read_card(folder / "README.md")
    own = _cached_repo(folder) or (_card_own_id(card) if card else None)
    if own:
        return BaseModel(own, hub_id=own)
    return BaseModel(folder.name, origin=(_card_base(card) if card else None) or _config_origin(folder))


def _is_hub_id(text: Any) -> bool:
    """"org/name" or "name" as the hub spells ids, and nothing that is or could be a path on this machine."""
    if not isinstance(text, str) or text.startswith((".", "~", "/")) or os.path.isabs(text) or "\\" in text:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not Path(text).exists()


def _cached_repo(folder: Path) -> str | None:
    """The hub cache keeps a model in `models--ORG--NAME/snapshots/REVISION`: the folder names its id."""
    parts = folder.parts
    for part, after in zip(parts, parts[1:-1]):
        if part.startswith("models--") and after == "snapshots":
            hub_id = part.removeprefix("models--").replace("--", "/")
            return hub_id if _is_hub_id(hub_id) else None
    return None


def _read_card(path: Path) -> ModelCard | None:
    """A model folder's own card, if it has a readable one."""
    if not path.is_file():
        return None
    try:
        return ModelCard(path.read_text(encoding="utf-8"), ignore_metadata_errors=True)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError):
        return None


def _card_own_id(card: ModelCard) -> str | None:
    """A hub card is titled with the model's name and its usage code loads `ORG/NAME` (the MiniLM package's
    folder: `sentence-transformers/all-MiniLM-L6-v2`): that id is the folder's own."""
    title = re.search(r"(?m)^# +(\S+) *$", card.text)
    if not title:
        return None
    # quoted, as code loads it, or linked: never a bare `outputs/NAME` (our own card's command line), which is a
    # relative path that merely does not exist from where this process runs
    ids = re.finditer(r"(?:(?<=['\"`])|(?<=huggingface\.co/))([\w.-]+/" + re.escape(title[1]) + r")(?=['\"`)\s]|$)",
                      card.text)
    return next((m[1] for m in ids if _is_hub_id(m[1])), None)


def _card_base(card: ModelCard) -> str | None:
    """The hub id the folder's card says the model was fine-tuned from."""
    base = card.data.to_dict().get("base_model")
    base = base[0] if isinstance(base, list) and base else base
    return base if _is_hub_id(base) else None


def _config_origin(folder: Path) -> str | None:
    """The model a saved config says it was loaded from (transformers 4 writes it), when that is a hub id."""
    try:
        recorded = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if _is_hub_id(recorded) else None


# ---- names that travel: data sources and the command ---------------------------------------------


def shown_source(report: Any) -> str:
    """A report's source as the card shows it: a hub dataset as named, files by their names ("a + b (first N)")."""
    if report.layout == "hub":
        return report.source
    parts = [re.fullmatch(r"(.*?)( \(first [\d,]+\))?", part) for part in report.source.split(" + ")]
    return " + ".join(Path(m[1]).name + (m[2] or "") for m in parts)


def shown_command(arguments: list[str], model: str, base: BaseModel) -> str:
    """The command as a reader can rerun it: the model by the card's name for it, and paths outside the working
    folder (absolute, ~, ..) by their names, also after `NAME=` or `--flag=`."""
    shown = []
    for argument in arguments:
        prefix, value = re.fullmatch(r"([^=/]*=)?(.*)", argument, re.S).groups()
        if value == model:
            value = base.name
        elif os.path.isabs(value) or value.startswith(("~", "..")):
            value = Path(value).name
        shown.append((prefix or "") + value)
    return "python qa.py " + shlex.join(shown)


# ---- what the run knows --------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalData:
    """One evaluation set as the card names it."""

    name: str  # "" for the only set
    prefix: str  # of its metrics: eval, or eval_NAME with several sets
    split: str  # its report's: validation, or validation.NAME
    dataset: str  # the hub dataset's id, or the file's name
    config: str | None  # the hub dataset's configuration; with several sets, a file's set name (one result each)
    language: str | None

    @property
    def label(self) -> str:
        return self.name or self.dataset


def eval_data(data_args: Any) -> list[EvalData]:
    """The run's evaluation sets: --validation_file's entries, else the hub dataset's validation split."""
    return [EvalData(e.name, e.prefix, e.split, e.source if e.hub else Path(e.source).name,
                     (e.config or None) if e.hub else (e.name or None), e.language)
            for e in run_eval_entries(data_args) if e.source]  # no file and no hub dataset: no evaluation


@dataclass(frozen=True)
class RunCard:
    """What the card says, from what the run knows: the model, the data (`reports`: split -> SquadReport), the
    scores, how it answers, and the command."""

    base: BaseModel
    results: dict[str, float]
    reports: dict[str, Any]
    sets: list[EvalData]
    head: str
    version_2: bool
    languages: list[str]
    architecture: str
    window: tuple[int, int]  # max_seq_length, doc_stride
    command: str
    trained: bool
    name: str  # the model's, as one loads it where the card goes: its hub id when pushed, else its folder's

    def scores(self, data: EvalData) -> dict[str, float]:
        """One set's scores, in SCORE_KEYS order."""
        return {k: self.results[f"{data.prefix}_{k}"] for k in SCORE_KEYS if f"{data.prefix}_{k}" in self.results}

    @property
    def scored(self) -> list[EvalData]:
        return [data for data in self.sets if self.scores(data)]

    def questions(self, data: EvalData) -> str:
        """A set as the prose names it: its data and its size (with several sets, its name first)."""
        report = self.reports.get(data.split)
        size = f"{report.questions:,} questions" if report is not None else ""
        if data.name:
            return f"{data.name} ({', '.join(filter(None, [data.dataset, size]))})"
        return f"{data.dataset} ({size})" if size else data.dataset


def run_card(trainer: Any, results: dict[str, float], reports: dict, arguments: list[str], model_args: Any,
             data_args: Any) -> RunCard:
    """The card's facts, gathered before HF's card replaces a README.md the model folder may hold."""
    base = base_model(model_args.model_name_or_path)
    model, out = trainer.model, trainer.args.output_dir
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # a LoRA run's: the model within
    here = Path(out).resolve().name if trainer.args.do_train or is_model_folder(out) else base.name
    name = (trainer.args.push_to_hub and trainer.hub_model_id) or here
    return RunCard(base, results, reports, eval_data(data_args), trainer.head.name, data_args.version_2_with_negative,
                   list(dict.fromkeys(data_args.language or [])),
                   f"{type(model).__name__} ({model.config.model_type})",
                   (data_args.max_seq_length, data_args.doc_stride),
                   shown_command(arguments, model_args.model_name_or_path, base), trainer.args.do_train, name)


# ---- the model-index: the results as the hub reads them --------------------------------------------


def eval_results(card: RunCard) -> list[EvalResult]:
    """One model-index result per evaluation set: its scores as measured (unrounded), SQuAD 2.0 ones with the
    null threshold they were scored at as the metric's argument (the best threshold for best_exact/best_f1)."""
    out = []
    for data in card.scored:
        used, best = (card.results.get(f"{data.prefix}_{k}") for k in ("null_threshold", "best_threshold"))
        for key, value in card.scores(data).items():
            threshold = best if key.startswith("best_") else used
            out.append(EvalResult(
                task_type="question-answering", task_name="Question Answering", dataset_type=data.dataset,
                dataset_name=data.dataset, dataset_config=data.config, dataset_split="validation",
                metric_type=key, metric_name=METRIC_NAMES[key], metric_value=value,
                metric_args={"null_score_diff_threshold": threshold} if card.version_2 and threshold is not None
                else None))
    return out


# ---- the prose -------------------------------------------------------------------------------------


def _task(card: RunCard) -> str:
    task = "question answering, the answer written from the context" if card.head == "generate" \
        else "extractive question answering"
    return task + (" in SQuAD 2.0's style (a question may have no answer in its context)" if card.version_2 else "")


def _headline(scores: dict[str, float]) -> str:
    exact = scores.get("exact", scores.get("exact_match"))
    return f"F1 {scores['f1']:.2f}" + (f" and exact match {exact:.2f}" if exact is not None else "")


def intro(card: RunCard) -> str:
    """What HF's first paragraph says, with a link only to a real hub id and the scores the run measured."""
    train = card.reports.get("train")
    if card.trained and train is not None:
        lead = (f"This model is a fine-tuned version of {card.base.markdown()} for {_task(card)}, trained on "
                f"{shown_source(train)} ({train.questions:,} questions).")
    else:
        lead = f"This card describes {card.base.markdown()} evaluated for {_task(card)}; this run did not train it."
    said = [f"On {card.questions(data)} it scores {_headline(card.scores(data))}." for data in card.scored
            if "f1" in card.scores(data)]
    return " ".join([lead, *said])


def description(card: RunCard) -> str:
    """How the model answers: its class, its answer head and its windows."""
    length, stride = card.window
    null = (f", or no answer when its null odds ({ODDS[card.head]}) exceed the null threshold (below)"
            if card.version_2 else "")
    return (f"{card.architecture} with the `{card.head}` answer head: {HEADS[card.head]}. A question and its "
            f"context are read in windows of at most {length} tokens, overlapping by {stride} tokens where the "
            f"context is longer; the answer is the best of all windows{null}.")


def uses(card: RunCard) -> str:
    """Intended use (the task, its languages, how to ask) and the limits the run knows of."""
    languages = f" in {', '.join(card.languages)}" if card.languages else ""
    answers = ("a span of the passage, or no answer when the passage does not hold one" if card.version_2 else
               "a span of the passage; trained without unanswerable questions, it answers even when the passage "
               "does not say")
    if card.head == "generate":
        answers = answers.replace("a span of the passage", "an answer written from the passage", 1)
    flag = " --version_2_with_negative" if card.version_2 else ""
    return (f"{_task(card)[0].upper()}{_task(card)[1:]}{languages}: given a question and a passage, the model "
            f"answers with {answers}. Ask it with\n\n```bash\npython qa.py --model_name_or_path {card.name}{flag} "
            f"--question \"...\" --context \"...\"\n```\n\nLimits:\n\n" + "\n".join(_limits(card)))


def _limits(card: RunCard) -> list[str]:
    """The run's own caveats: how many questions its figures rest on, and evaluation data it trained on."""
    lines = ["- It answers from the passage alone, and carries the biases of its base model and training data."]
    if not card.scored:
        lines.append("- This run measured nothing: evaluate the model (`--do_eval`) before relying on it.")
    sizes = {data.label: card.reports[data.split] for data in card.scored if data.split in card.reports}
    if sizes:
        counts = [f"{r.questions:,} questions" + (f" ({label})" if len(sizes) > 1 else "")
                  for label, r in sizes.items()]
        few = (f": too few to compare with published results ({PUBLISHED})"
               if min(r.questions for r in sizes.values()) < FEW else "")
        lines.append(f"- Its figures come from {', '.join(counts)}{few}.")
    train = card.reports.get("train")
    trained_on = {part.split(" (first ")[0] for part in train.source.split(" + ")} if card.trained and train else set()
    lines += [f"- {label} is also its training data: the figures overstate how it answers new questions."
              for label, r in sizes.items() if r.source in trained_on]
    return lines


def data_list(card: RunCard) -> str:
    """Every split the run read, with its question counts."""
    lines = [f"- {split}: {shown_source(r)} ({r.questions:,} questions, "
             + (f"{r.unanswerable:,} unanswerable)" if r.has_answers else "no answers given)")
             for split, r in card.reports.items()]
    return "Questions in SQuAD's format, as `qa.py` read them:\n\n" + "\n".join(lines) if lines else \
        "This run read no questions."


# ---- the sections qa.py adds ---------------------------------------------------------------------


def _evaluation(card: RunCard) -> str:
    """Every score of every set (and their mean, with several), by the rules they were scored by."""
    scored = card.scored
    rules = f"MLQA's rules for {', '.join(card.languages)}" if card.languages else "the official SQuAD rules"
    columns = [("value", "eval")] if len(card.sets) == 1 else \
        [("mean", "eval"), *((data.label, data.prefix) for data in scored)]
    keys = [k for k in SCORE_KEYS if any(f"{prefix}_{k}" in card.results for _, prefix in columns)]
    cells = [[f"{card.results[f'{p}_{k}']:.2f}" if f"{p}_{k}" in card.results else "" for _, p in columns]
             for k in keys]
    rows = "\n".join(f"| {k} | {' | '.join(row)} |" for k, row in zip(keys, cells))
    return (f"## Evaluation (qa.py)\n\nScored by {rules} on {', '.join(card.questions(d) for d in scored)}; answer "
            f"head: {card.head}.\n\n| metric | {' | '.join(c for c, _ in columns)} |\n|---{'|---' * len(columns)}|\n"
            f"{rows}\n")


def _threshold(card: RunCard) -> str:
    """The null threshold each set was scored with, and its best one."""
    sets = [data for data in card.scored if f"{data.prefix}_best_threshold" in card.results]
    if not sets:
        return ""
    said = []
    for data in sets:
        used, best, f1 = (card.results.get(f"{data.prefix}_{k}") for k in ("null_threshold", "best_threshold",
                                                                            "best_f1"))
        if len(card.sets) == 1:
            said.append(f"This run evaluated with {used or 0.0:g}; the best threshold on the evaluation data is "
                        f"{best:g} (F1 {f1:.2f}).")
        else:
            said.append(f"On {data.label} it evaluated with {used or 0.0:g}; the best threshold there is {best:g} "
                        f"(F1 {f1:.2f}).")
    recorded = ("It is recorded in `null_threshold.json`, which `qa.py` uses for later runs on this folder unless "
                "`--null_score_diff_threshold` says otherwise." if "eval_best_threshold" in card.results else "")
    return (f"## Null threshold\n\nA question gets no answer when its null odds ({ODDS[card.head]}) exceed the "
            f"threshold. " + " ".join([*said, recorded]).strip() + "\n")


def sections(card: RunCard) -> str:
    """Markdown appended to HF's card: the scores, the threshold and the command."""
    parts = [_evaluation(card) if card.scored else "", _threshold(card),
             f"## Command\n\n```bash\n{card.command}\n```\n"]
    return "\n".join(part for part in parts if part)


# ---- HF's card made to travel ----------------------------------------------------------------------


def finish_card(path: str, card: RunCard) -> None:
    """HF's README.md rewritten: base_model a hub id or none, model-index with the run's results, and the prose
    (HF's first paragraph and its "More information needed" sections) from what the run knows."""
    hf = ModelCard(Path(path).read_text(encoding="utf-8"))
    hf.data.base_model = card.base.tag
    hf.data.model_name = hf.data.model_name or Path(path).parent.name
    results = eval_results(card)
    if results:
        hf.data.eval_results = results
    hf.text = _rewritten(hf.text, hf.data.model_name, card)
    write_atomic(path, lambda f: f.write(str(hf)))


def _rewritten(text: str, title: str, card: RunCard) -> str:
    """HF's body with its first paragraph ours, its placeholder sections filled, and the empty ones dropped;
    HF's other sections (hyperparameters, framework versions) and ours stay as they are."""
    comment = text.split("\n# ", 1)[0] if "\n# " in text else ""
    filled = {"## Model description": description(card), "## Intended uses & limitations": uses(card),
              "## Training and evaluation data": data_list(card)}
    dropped = {MISSING}
    if not card.trained:  # HF lists the training arguments' defaults as if they had been used
        filled["## Training procedure"] = "This run did not train: it evaluated the model as loaded."
        dropped |= {"### Training hyperparameters", "### Training results"}
    kept = []
    for chunk in re.split(r"(?m)^(?=#{2,3} )", text)[1:]:
        heading, _, body = chunk.partition("\n")
        heading, body = heading.strip(), filled.pop(heading.strip(), body).strip()
        if {heading, body} & dropped or (heading.startswith("### ") and not body):
            continue
        kept.append(f"{heading}\n\n{body}\n" if body else f"{heading}\n")
    ours = [f"{heading}\n\n{body}\n" for heading, body in filled.items()]  # a template without HF's headings
    return f"{comment.rstrip()}\n\n# {title}\n\n{intro(card)}\n\n" + "\n".join(ours + kept)


def card_kwargs(finetuned_from: str | None, dataset_name: str | None, dataset_config_name: str | None,
                local_file: str | None = None, languages: list[str] | None = None) -> dict[str, Any]:
    """HF's arguments: the base model by a hub id only (none: HF names none, as for a local folder), and a local
    data file by its name (HF's card would say "on the None dataset")."""
    kwargs: dict[str, Any] = {"finetuned_from": finetuned_from, "tasks": "question-answering"}
    if languages:
        kwargs["language"] = languages
    if local_file and not dataset_name:
        kwargs["dataset"] = Path(local_file).name
    if dataset_name:
        kwargs["dataset_tags"] = dataset_name
        kwargs["dataset"] = f"{dataset_name} {dataset_config_name}" if dataset_config_name else dataset_name
        if dataset_config_name:
            kwargs["dataset_args"] = dataset_config_name
    return kwargs


def write_card(trainer: Any, results: dict[str, float], reports: dict, arguments: list[str], model_args: Any,
               data_args: Any) -> None:
    """The model card (HF's, made to travel, plus our scores, threshold and command), pushed to the hub with the
    model when --push_to_hub is given."""
    if not trainer.args.push_to_hub and card_is_kept(trainer.args, data_args.update_model_folder):
        return
    card = run_card(trainer, results, reports, arguments, model_args, data_args)
    trainer.card_sections = sections(card)
    trainer.finish_card = functools.partial(finish_card, card=card)
    kwargs = card_kwargs(card.base.tag, data_args.dataset_name, data_args.dataset_config_name,
                         (data_args.train_file or data_args.validation_file or [None])[0], card.languages)
    if trainer.args.push_to_hub:
        trainer.push_to_hub(**kwargs)
    elif trainer.args.should_save:
        trainer.create_model_card(**kwargs)


def card_is_kept(args: Any, update: bool) -> bool:
    """A run that did not train does not replace the card of the model folder it writes into, unless asked."""
    card = os.path.join(args.output_dir, "README.md")
    if args.do_train or update or not os.path.isfile(card) or not is_model_folder(args.output_dir):
        return False
    logger.info("Kept the model card %s (--update_model_folder replaces it with this run's)", card)
    return True
