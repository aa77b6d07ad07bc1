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
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from qakit.adapters import ADAPTER_CONFIG, quantization, read_adapter
from qakit.errors import QAConfigError, QAError, one_line
from qakit.family import QAFamily, prepare_model
from qakit.heads import SpanHead, head_modules, resolve_head

logger = logging.getLogger("qa")

_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_source(name: str, flag: str) -> None:
    """A local model path that is wrong is reported as such, not as a hub or network problem."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise QAConfigError(f"{flag} {name}: the folder has no config.json, so it is not a saved model "
                                "(a model folder holds config.json, the weights and the tokenizer files)")
    elif path.exists():
        raise QAConfigError(f"{flag} {name} is a file; pass the folder that holds config.json and the weights")
    elif not _REPO_ID.match(name) or name.startswith((".", "~")):
        raise QAConfigError(f"{flag} {name}: no such folder (and not a hub model id); check the path")


def load_model(model_args: Any, training_args: Any) -> tuple[torch.nn.Module, Any, SpanHead]:
    """Config, tokenizer, and the model with the head it answers with (`qakit.heads`)."""
    predict_with_generate = training_args.predict_with_generate
    check_model_source(model_args.model_name_or_path, "--model_name_or_path")
    for flag in ("config_name", "tokenizer_name"):
        if getattr(model_args, flag):
            check_model_source(getattr(model_args, flag), f"--{flag}")
    hub = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision, "token": model_args.token,
           "trust_remote_code": model_args.trust_remote_code}
    adapter = read_adapter(model_args.model_name_or_path)  # an adapter folder: weights from its base model
    source = adapter["base_model_name_or_path"] if adapter else model_args.model_name_or_path
    config_source = model_args.config_name or source
    check_remote_code(model_args)
    with damaged_files(config_source, "config.json", "--config_name", ValueError):  # valid JSON, wrong content
        try:
            config = AutoConfig.from_pretrained(config_source, **hub)
        except ValueError as err:
            if "trust_remote_code" not in str(err):
                raise
            raise QAConfigError(f"{config_source}: the model brings its own code, which runs only when allowed: "
                                "read it on the hub, then pass --trust_remote_code") from err
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
    kwargs: dict[str, Any] = {"dtype": dtype, **quantization(model_args)}  # transformers 5 defaults to the
    # checkpoint's dtype; we do not
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    with damaged_files(source, "weights", "--model_name_or_path", SafetensorError):
        model, loading = head.model_class(config).from_pretrained(source, config=config, output_loading_info=True,
                                                                  **hub, **kwargs)
    saved_with_adapter = tuple(f"{m}." for m in (adapter or {}).get("modules_to_save") or [])
    missing = [key for key in loading["missing_keys"] if not key.startswith(saved_with_adapter)]
    check_answer_head(model, missing, model_args, head.name, training_args.do_train)
    prepare_model(model, tokenizer, generative=head.generative)
    return model, tokenizer, head


def check_answer_head(model: torch.nn.Module, missing: list[str], model_args: Any, head: str, training: bool) -> None:
    """A head the checkpoint lacks starts from random weights: fine to train, noise to evaluate (its answers
    change with --seed, and only the loader's table of missing keys says so)."""
    modules, missing = head_modules(model), set(missing)
    untrained = [name for name, _ in model.named_parameters() if name in missing and name.split(".")[0] in modules]
    source = model_args.model_name_or_path
    if not untrained:
        return
    if training:
        logger.info("Training the answer head from fresh weights (%s: not in %s)", ", ".join(untrained), source)
    elif model_args.allow_untrained_head:
        logger.warning("The answer head's weights (%s) are not in %s: answering with random ones "
                       "(--allow_untrained_head), so the answers are noise", ", ".join(untrained), source)
    else:
        raise QAConfigError(
            f"the {head} answer head's weights ({', '.join(untrained)}) are not in {source}: it was not fine-tuned "
            f"to answer this way, so its answers would be random. Pass a model fine-tuned for question answering "
            f"(or train this one with --do_train); if it was saved with another --answer_head, pass that one; "
            f"--allow_untrained_head answers anyway (a smoke test)")


def check_remote_code(model_args: Any) -> None:
    """A local model folder (or --config_name folder) whose config.json names a model type transformers does not
    know, mapped by `auto_map` to code in the folder, loads only with --trust_remote_code. Said in one line naming
    the folder and the files to read first; transformers' ValueError would be reported as a damaged config.json."""
    if model_args.trust_remote_code:
        return
    source = model_args.config_name or model_args.model_name_or_path
    try:
        config = json.loads((Path(source).expanduser() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return  # a hub id, or a config.json that qakit.models reports as damaged
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or "AutoConfig" not in auto_map or config.get("model_type") in CONFIG_MAPPING:
        return
    references = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value])]
    files = sorted({r.split("--")[-1].rsplit(".", 1)[0] + ".py" for r in references if isinstance(r, str)})
    flag = "--config_name" if model_args.config_name else "--model_name_or_path"
    raise QAConfigError(f"{flag} {source}: its config.json has model_type {config.get('model_type')!r}, which "
                        f"transformers does not know, and maps it (auto_map) to code in the folder ({', '.join(files)})"
                        " that runs only when allowed: read that code, then pass --trust_remote_code")


def _damaged_tokenizer(source: str, err: Exception) -> QAConfigError:
    return QAConfigError(f"a tokenizer file in {source} is damaged ({one_line(str(err))}): copy the model "
                         "folder again, or pass --tokenizer_name")


@contextmanager
def damaged_files(source: str, what: str, flag: str, errors: type[Exception]) -> Iterator[None]:
    """A model folder's file that cannot be read (cut short by an interrupted copy, or holding the wrong content)
    is one line naming it and the fix, not a library's traceback."""
    try:
        yield
    except errors as err:
        if isinstance(err, QAError) or not Path(source).is_dir():
            raise
        raise QAConfigError(f"the {what} in {source} cannot be read ({one_line(str(err))}): the file is "
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
