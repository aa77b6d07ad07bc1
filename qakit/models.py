"""Loading the model: its config, tokenizer and weights with the head it answers with, and the checks that
turn a wrong path or a tokenizer that does not belong to the model into one clear line."""

from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer

from qakit.errors import QAConfigError
from qakit.family import QAFamily, prepare_model
from qakit.heads import SpanHead, resolve_head

logger = logging.getLogger("qa")

_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_source(name: str, flag: str) -> None:
    """A local model path that is wrong is reported as such, not as a hub or network problem."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise QAConfigError(f"{flag} {name}: the folder has no config.json, so it is not a saved model "
                                "(a model folder holds config.json, the weights and the tokenizer files)")
    elif path.exists():
        raise QAConfigError(f"{flag} {name} is a file; pass the folder that holds config.json and the weights")
    elif not _REPO_ID.match(name) or name.startswith((".", "~")):
        raise QAConfigError(f"{flag} {name}: no such folder (and not a hub model id); check the path")


def load_model(model_args: Any, predict_with_generate: bool) -> tuple[torch.nn.Module, Any, SpanHead]:
    """Config, tokenizer, and the model with the head it answers with (`qakit.heads`)."""
    check_model_source(model_args.model_name_or_path, "--model_name_or_path")
    for flag in ("config_name", "tokenizer_name"):
        if getattr(model_args, flag):
            check_model_source(getattr(model_args, flag), f"--{flag}")
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}
    config_source = model_args.config_name or model_args.model_name_or_path
    with damaged_files(config_source, "config.json", "--config_name", ValueError):  # valid JSON, wrong content
        config = AutoConfig.from_pretrained(config_source, **hub)
    head = resolve_head(config, model_args.answer_head, predict_with_generate)
    head.configure(config, model_args)
    logger.info("Answer head: %s", head.name)
    tokenizer_source = model_args.tokenizer_name or model_args.model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **hub)
    except json.JSONDecodeError as err:  # tokenizer.json cut short (a copy interrupted), read by transformers 5
        raise _damaged_tokenizer(tokenizer_source, err) from err
    except (TypeError, ValueError) as err:  # transformers 4.x: a tokenizer class given no vocabulary file
        raise QAConfigError(f"cannot load a tokenizer from {tokenizer_source} ({err}): the folder probably lacks "
                            "its tokenizer files (tokenizer.json, vocab.txt, spiece.model, ...); copy them there "
                            "or pass --tokenizer_name") from err
    except Exception as err:  # the tokenizers library reports a damaged file as a bare Exception (4.x)
        if type(err) is not Exception:
            raise
        raise _damaged_tokenizer(tokenizer_source, err) from err
    check_vocabulary(tokenizer, config, tokenizer_source)
    dtype = model_args.torch_dtype if model_args.torch_dtype == "auto" else getattr(torch, model_args.torch_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}  # transformers 5 defaults to the checkpoint's dtype; we do not
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    with damaged_files(model_args.model_name_or_path, "weights", "--model_name_or_path", SafetensorError):
        model = head.model_class(config).from_pretrained(model_args.model_name_or_path, config=config, **hub,
                                                         **kwargs)
    prepare_model(model, tokenizer, generative=head.generative)
    return model, tokenizer, head


def _damaged_tokenizer(source: str, err: Exception) -> QAConfigError:
    return QAConfigError(f"a tokenizer file in {source} is damaged ({' '.join(str(err).split())}): copy the model "
                         "folder again, or pass --tokenizer_name")


@contextmanager
def damaged_files(source: str, what: str, flag: str, errors: type[Exception]) -> Iterator[None]:
    """A model folder's file that cannot be read (cut short by an interrupted copy, or holding the wrong content)
    is one line naming it and the fix, not a library's traceback."""
    try:
        yield
    except errors as err:
        if not Path(source).is_dir():
            raise
        raise QAConfigError(f"the {what} in {source} cannot be read ({' '.join(str(err).split())}): the file is "
                            f"damaged or cut short (an interrupted copy?); copy the model folder again, or pass "
                            f"another {flag}") from err


def check_vocabulary(tokenizer: Any, config: Any, source: str) -> None:
    """A tokenizer that does not fit the model gives F1 0 with exit 0; transformers 5 builds a 5-token one
    for a folder without tokenizer files. Refuse it."""
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int) or vocab <= 0:
        return
    size = len(tokenizer)
    if size < vocab // 2 or size > vocab:  # too few tokens, or ids beyond the embedding table
        raise QAConfigError(
            f"the tokenizer loaded from {source} has {size} tokens but the model's vocab_size is {vocab}: the "
            "folder probably lacks its tokenizer files (tokenizer.json, vocab.txt, spiece.model, ...); copy them "
            "there or pass --tokenizer_name")


def check_unknown_share(family: QAFamily, raw: Any, source: str, n: int = 200,
                        limit_share: float = 0.5) -> None:
    """Most context tokens unknown means the tokenizer does not belong to this data or model."""
    split = next(iter(raw))
    share = family.unknown_share(list(dict.fromkeys(raw[split][: n * 10]["context"]))[:n])
    if share > limit_share:
        raise QAConfigError(
            f"the tokenizer loaded from {source} maps {100 * share:.0f}% of the {split} contexts' tokens to its "
            "unknown token: it does not fit this data or model; pass the model's own tokenizer (--tokenizer_name)")
