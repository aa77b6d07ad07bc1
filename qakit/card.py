"""The model card: HF Trainer's README.md, plus what this run measured, the threshold, the data and the command.

`card_kwargs` are the arguments HF's run_qa.py passes to `create_model_card` / `push_to_hub`; the
sections are appended by `QuestionAnsweringTrainer.create_model_card`, so a push uploads them too.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

from qakit.outputs import is_model_folder

logger = logging.getLogger(__name__)

ODDS = {"span": "null score minus best span score", "beam": "the answerability logit",
        "generate": "log-probability of the empty answer minus the best answer's"}
SCORE_KEYS = ("exact_match", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")


def card_kwargs(model_name_or_path: str, dataset_name: str | None, dataset_config_name: str | None,
                local_file: str | None = None) -> dict[str, Any]:
    """HF's arguments; a local data file is named too (HF's card then says "on the None dataset")."""
    kwargs: dict[str, Any] = {"finetuned_from": model_name_or_path, "tasks": "question-answering"}
    if local_file and not dataset_name:
        kwargs["dataset"] = Path(local_file).name
    if dataset_name:
        kwargs["dataset_tags"] = dataset_name
        kwargs["dataset"] = f"{dataset_name} {dataset_config_name}" if dataset_config_name else dataset_name
        if dataset_config_name:
            kwargs["dataset_args"] = dataset_config_name
    return kwargs


def card_sections(results: dict[str, float], sources: dict[str, Any], command: list[str], head: str,
                  languages: list[str] | None = None) -> str:
    """Markdown appended to the Trainer's card. `sources`: split -> squad_v2.SquadReport."""
    parts = []
    scored = [(k, results[f"eval_{k}"]) for k in SCORE_KEYS if f"eval_{k}" in results]
    if scored:
        where = sources.get("validation")
        on = f" on {where.source} ({where.questions:,} questions)" if where is not None else ""
        rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in scored)
        rules = f"MLQA's rules for {', '.join(languages)}" if languages else "the official SQuAD rules"
        parts.append(f"## Evaluation (qa.py)\n\nScored by {rules}{on}; answer head: {head}.\n\n"
                     f"| metric | value |\n|---|---|\n{rows}\n")
    if "eval_best_threshold" in results:
        parts.append(
            "## Null threshold\n\n"
            f"A question gets no answer when its null odds ({ODDS[head]}) exceed the threshold. "
            f"This run evaluated with {results.get('eval_null_threshold', 0.0):g}; the best threshold on the "
            f"evaluation data is {results['eval_best_threshold']:g} (F1 {results['eval_best_f1']:.2f}). It is "
            "recorded in `null_threshold.json`, which `qa.py` uses for later runs on this folder unless "
            "`--null_score_diff_threshold` says otherwise.\n")
    data = [f"- {split}: {r.source} ({r.questions:,} questions, {r.unanswerable:,} unanswerable)"
            for split, r in sources.items()]
    if data:
        parts.append("## Data\n\n" + "\n".join(data) + "\n")
    parts.append("## Command\n\n```bash\npython qa.py " + shlex.join(command) + "\n```\n")
    return "\n".join(parts)


def write_card(trainer: Any, results: dict[str, float], reports: dict, arguments: list[str], model_args: Any,
               data_args: Any) -> None:
    """The model card (as HF's run_qa.py writes it, plus our scores, threshold, data and command), pushed to
    the hub with the model when --push_to_hub is given."""
    if not trainer.args.push_to_hub and card_is_kept(trainer.args, data_args.update_model_folder):
        return
    trainer.card_sections = card_sections(results, reports, arguments, trainer.head.name, data_args.language)
    kwargs = card_kwargs(model_args.model_name_or_path, data_args.dataset_name, data_args.dataset_config_name,
                         (data_args.train_file or data_args.validation_file or [None])[0])
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
