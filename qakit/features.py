"""Windows as datasets: made in batches (in parallel if asked), cached on disk, ready for the loaders.

`build_features` maps a split of questions to its windows once and keys the cache on everything that
shapes them; `EvalSet` keeps an evaluation split's questions next to its windows, in the length order
the evaluation loop reads them.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qakit import alignment, family as family_module, generative, template, windows
from qakit.errors import QAConfigError
from qakit.evalsets import run_eval_entries
from qakit.family import QAFamily
from qakit.windows import (EVAL_META, WindowIndex, check_window_room, prepare_eval_features,
                           prepare_train_features)

logger = logging.getLogger(__name__)


def limit(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """Sample limits count questions, so one question's windows are never split."""
    return ds if n is None else ds.select(range(min(n, len(ds))))


def build_features(ds: datasets.Dataset, split: str, family: QAFamily, max_seq_length: int, doc_stride: int,
                   cache_dir: str | None, main_process_first: Callable[..., AbstractContextManager], *,
                   overwrite_cache: bool = False, num_proc: int | None = None,
                   text_inputs: generative.TextInputs | None = None) -> datasets.Dataset:
    """Tokenize into windows in batches (in parallel with `num_proc`), cached on disk (in memory only, with no
    `cache_dir`: the questions asked ad hoc are not written anywhere).

    Span heads get (question, context) pairs framed by the tokenizer's template; generative models
    (`text_inputs`) get HF's `question: Q context: C` text with answer targets.

    The cache key covers the questions, the tokenizer, the model's inputs, the window settings and the
    code that makes windows, so a second run with the same data reuses them and a change to any does not.
    """
    train = split == "train"
    if text_inputs is None:
        fn = prepare_train_features if train else prepare_eval_features
        kwargs = {"family": family, "max_seq_length": max_seq_length, "doc_stride": doc_stride}
    else:
        fn = generative.prepare_train_features if train else generative.prepare_eval_features
        kwargs = {"family": family, "inputs": text_inputs}
    schema = _window_schema(ds, fn, kwargs)
    key = _cache_key(ds, family, split, schema, max_seq_length, doc_stride, repr(text_inputs))
    cache_file = os.path.join(cache_dir, f"qa-{split}-{key}.arrow") if cache_dir else None
    cached = bool(cache_file) and not overwrite_cache and bool(glob.glob(cache_file[: -len(".arrow")] + "*.arrow"))
    if cached:
        logger.info("%s: reusing the windows cached in %s", split, cache_file)
    elif text_inputs is None:  # said when the windows are made; a run that reuses them was told then
        check_window_room(ds["question"], ds["id"], family, max_seq_length, doc_stride, split)
    if cache_file:
        os.makedirs(cache_dir, exist_ok=True)
    with main_process_first(desc=f"{split} windows"):
        try:
            features = ds.map(fn, batched=True, with_indices=not train, fn_kwargs=kwargs,
                              remove_columns=ds.column_names, num_proc=num_proc, keep_in_memory=not cache_file,
                              load_from_cache_file=not overwrite_cache, cache_file_name=cache_file,
                              new_fingerprint=key, desc=f"Windows for {split}", features=schema)
        except (pa.ArrowException, OSError) as err:
            if not cached:
                raise
            raise QAConfigError(f"the windows cache {cache_file} cannot be read ({err}): pass --overwrite_cache "
                                "to make it again (or delete the file)") from err
    logger.info("%s: %d questions -> %d windows", split, len(ds), len(features))
    return features


def _window_schema(ds: datasets.Dataset, fn: Any, kwargs: dict) -> datasets.Features | None:
    """Every window column is integers: int32 halves what int64 (Arrow's default) stores and reads, and
    token types (0, 1, at most 2) fit in int8."""
    if len(ds) == 0:
        return None
    one = fn(ds[:1], **kwargs) if "indices" not in inspect.signature(fn).parameters else fn(ds[:1], [0], **kwargs)
    width = {"token_type_ids": "int8"}
    return datasets.Features({k: datasets.Sequence(datasets.Value(width.get(k, "int32"))) if isinstance(v[0], list)
                              else datasets.Value("int32") for k, v in one.items()})


def _cache_key(ds: datasets.Dataset, family: QAFamily, split: str, schema: datasets.Features | None,
               max_seq_length: int, doc_stride: int, text_inputs: str) -> str:
    h = hashlib.sha256()
    code = [Path(m.__file__).read_text() for m in (windows, family_module, template, alignment, generative)]
    for part in (datasets.fingerprint.Hasher.hash(ds.data), family.fingerprint(), split, str(schema),
                 str(max_seq_length), str(doc_stride), text_inputs, *code):
        h.update(part.encode())
    return h.hexdigest()[:16]


def window_lengths(features: Any) -> np.ndarray:
    """Tokens per window, from the Arrow list offsets: nothing is decoded."""
    return pc.list_value_length(features.data.table.column("input_ids")).to_numpy()


def with_lengths(features: datasets.Dataset, column: str) -> datasets.Dataset:
    """A length column for length-grouped batches: without it the Trainer decodes every window to count."""
    if column in features.column_names:
        return features
    return features.add_column(column, window_lengths(features))


class EvalSet:
    """An evaluation split: its questions, their windows, and what maps windows back to text."""

    def __init__(self, examples: datasets.Dataset, features: datasets.Dataset, has_answers: bool = True,
                 prefix: str = "eval", language: str | None = None):
        self.prefix, self.language = prefix, language  # its files' and metrics' prefix; the scoring rules' language
        self.examples = examples
        self.features = features
        self.has_answers = has_answers
        self.windows = WindowIndex.from_features(features)
        self.by_length = np.argsort(-window_lengths(features), kind="stable")
        model_cols = features.remove_columns([c for c in EVAL_META if c in features.column_names])
        self.loader_dataset = model_cols.add_column("feature_index", np.arange(len(model_cols))).select(
            self.by_length)
        self.ids = list(examples["id"])  # plain lists: a datasets Column costs ~35 us per index
        self.contexts = shared_strings(examples, "context")


def shared_strings(ds: datasets.Dataset, column: str, batch_size: int = 1000) -> list[str]:
    """A string column as a list in which equal values are one object.

    SQuAD asks ~10 questions per paragraph; one str per question would hold each context ten times.
    """
    seen: dict[str, str] = {}
    values: list[str] = []
    for batch in ds.select_columns([column]).iter(batch_size=batch_size):
        values += [seen.setdefault(v, v) for v in batch[column]]
    return values


class SplitWindows:
    """Each split's windows, made (or read from the cache) when first asked for, in the run's `windows` time."""

    def __init__(self, raw: datasets.DatasetDict, family: QAFamily, text_inputs: generative.TextInputs | None,
                 data_args: Any, training_args: Any, cache_dir: str | None, phases: Any):
        self.raw, self.family, self.text_inputs, self.phases = raw, family, text_inputs, phases
        self.data_args, self.training_args = data_args, training_args
        # questions asked ad hoc are windowed in memory: asking writes nothing to disk
        self.cache_dir = None if data_args.asking else os.path.join(cache_dir or datasets.config.HF_DATASETS_CACHE,
                                                                    "qa_features")

    def _make(self, split: str, n: int | None) -> tuple[datasets.Dataset, datasets.Dataset]:
        if split not in self.raw:
            flag = {"train": "--do_train", "validation": "--do_eval", "test": "--do_predict"}[split.split(".")[0]]
            raise QAConfigError(f"{flag} needs a {split} split: pass --{split}_file or a --dataset_name that has one")
        examples, d = limit(self.raw[split], n), self.data_args
        with self.phases.time("windows"):
            features = build_features(examples, split, self.family, d.max_seq_length, d.doc_stride, self.cache_dir,
                                      self.training_args.main_process_first, overwrite_cache=d.overwrite_cache,
                                      num_proc=d.preprocessing_num_workers, text_inputs=self.text_inputs)
        return examples, features

    def training(self) -> datasets.Dataset:
        """The training windows (of the questions the loader kept: --max_train_samples caps each file), with the
        lengths the length-grouped sampler reads."""
        features = self._make("train", None)[1]
        return with_lengths(features, self.training_args.length_column_name)

    def evaluation(self) -> list[EvalSet]:
        """Each evaluation set's windows (`qakit.evalsets`: one set, or one per --validation_file)."""
        entries = run_eval_entries(self.data_args)
        return [EvalSet(*self._make(e.split, self.data_args.max_eval_samples), prefix=e.prefix, language=e.language)
                for e in entries]

    def test(self, reports: dict[str, Any]) -> EvalSet:
        """The test questions' windows; `reports` (the loader's) say whether they have answers to score, by the
        rules of --language when it names one language."""
        examples, features = self._make("test", self.data_args.max_predict_samples)
        languages = self.data_args.language or []
        return EvalSet(examples, features, has_answers=reports["test"].has_answers, prefix="predict",
                       language=languages[0] if len(languages) == 1 else None)
