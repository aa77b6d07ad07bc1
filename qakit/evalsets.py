"""Several evaluation sets in one run: their names, their languages, and the macro average over them.

`--validation_file` takes several entries (`PATH`, `NAME=PATH`, or `hub:DATASET[:CONFIG]` for a hub dataset's
validation split), each scored with its own `--language`. With one entry nothing changes: the split is
`validation`, its files and metrics carry the prefix `eval`, as HF's run_qa.py names them. With several, set
NAME is the split `validation.NAME` with the prefix `eval_NAME` (HF's Trainer names a dict of evaluation
sets the same way), and `eval_f1`, `eval_exact`, ... are the macro average over the sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qakit.errors import QAConfigError

SPLIT = "validation"
HUB = "hub:"
_SUFFIXES = (".gz", ".jsonl", ".json")
# the scores averaged over the sets, where every set reports them (the per-part and best-threshold figures stay
# per set: their question counts and thresholds differ from set to set)
MACRO_KEYS = ("exact_match", "exact", "f1")


@dataclass(frozen=True)
class EvalEntry:
    """One evaluation set as given: where its questions come from, its name, split, prefix and language."""

    source: str  # a file path, or a hub dataset name
    config: str | None  # a hub dataset's configuration
    name: str  # "" for the only set
    language: str | None

    @property
    def hub(self) -> bool:
        return self.config is not None

    @property
    def split(self) -> str:
        return f"{SPLIT}.{self.name}" if self.name else SPLIT

    @property
    def prefix(self) -> str:
        return f"eval_{self.name}" if self.name else "eval"


def _name_of(source: str) -> str:
    """A set's default name: the file's name without its data suffixes, or the hub dataset's last part."""
    name = Path(source.removeprefix(HUB).split(":")[0] if source.startswith(HUB) else source).name
    while any(name.endswith(s) for s in _SUFFIXES):
        name = next(name[: -len(s)] for s in _SUFFIXES if name.endswith(s))
    return re.sub(r"[^\w-]", "_", name).removeprefix("eval_")  # eval_en.json: "en", its metrics eval_en_*


def _parse(entry: str) -> tuple[str, str]:
    """`NAME=PATH` or a bare source; the name made safe for file names and metric keys."""
    named = re.fullmatch(r"([\w-]+)=(.+)", entry)
    if named and not Path(entry).exists():
        if named.group(1).startswith("eval_"):
            raise QAConfigError(f"--validation_file {entry}: a set's name may not start with eval_ (its metrics are "
                                f"eval_NAME_*); name it {named.group(1).removeprefix('eval_')}")
        return named.group(1), named.group(2)
    return _name_of(entry), entry


def eval_entries(files: list[str] | None, languages: list[str] | None) -> list[EvalEntry]:
    """The evaluation sets `--validation_file` and `--language` describe (none without files)."""
    files, languages = list(files or []), list(languages or [])
    if len(languages) > 1 and len(languages) != len(files):
        raise QAConfigError(f"--language takes one language for every set or one per --validation_file: got "
                            f"{len(languages)} languages for {len(files)} file(s)")
    parsed = [_parse(f) for f in files]
    names = [name for name, _ in parsed]
    clash = sorted({n for n in names if names.count(n) > 1})
    if len(files) > 1 and clash:
        raise QAConfigError(f"two evaluation sets would both be named {clash[0]!r}: name them, e.g. --validation_file "
                            f"{clash[0]}_a=PATH {clash[0]}_b=PATH")
    entries = []
    for n, (name, source) in enumerate(parsed):
        config = None
        if source.startswith(HUB):
            source, _, config = source.removeprefix(HUB).partition(":")
            config = config or ""
        language = languages[n] if len(languages) > 1 else (languages[0] if languages else None)
        entries.append(EvalEntry(source, config, name if len(files) > 1 else "", language))
    return entries


def run_eval_entries(data_args: Any) -> list[EvalEntry]:
    """A run's evaluation sets: --validation_file's entries, else its one validation split (a hub dataset's, when
    --dataset_name names one)."""
    entries = eval_entries(data_args.validation_file, data_args.language)
    if entries:
        return entries
    hub = data_args.dataset_name
    return [EvalEntry(hub or "", (data_args.dataset_config_name or "") if hub else None, "",
                      (data_args.language or [None])[0])]


def combine(per_set: list[dict[str, float]], prefixes: list[str]) -> dict[str, float]:
    """Every set's metrics, and `eval_<score>`: the mean over the sets of each score every set reports."""
    out = {key: value for metrics in per_set for key, value in metrics.items()}
    for key in MACRO_KEYS:
        values = [metrics.get(f"{prefix}_{key}") for metrics, prefix in zip(per_set, prefixes)]
        if values and all(isinstance(v, (int, float)) for v in values):
            out[f"eval_{key}"] = sum(values) / len(values)
    return out
