"""A trained span-head model folder exported to ONNX, and run with onnxruntime on CPU like the torch model.

The export uses torch's own exporter, not optimum, because optimum-onnx 0.1.0 requires transformers<4.58 and
this tool runs on transformers 5. It takes the dynamo path (`torch.onnx.export(..., dynamo=True)`: torch.export
traces the model, onnxscript writes the graph), torch's default and the one it maintains (the TorchScript
exporter is deprecated); it exports BERT-style span heads as they are, so no fallback is kept. Batch and
sequence axes stay dynamic, and the graph takes exactly the inputs the model is fed (ids, and the mask and
token types where the model takes them and the tokenizer makes them).

`OnnxQAModel` is driven as a torch span-head model is: its `forward` lists the graph's inputs plus
`start_positions`/`end_positions` (the project reads that signature to choose the inputs it sends) and returns
`start_logits`/`end_logits` as float32 tensors.

    python -m qakit.onnx MODEL_DIR OUT_DIR [--int8] [--opset N]
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnxruntime
import torch
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qakit.adapters import read_adapter
from qakit.errors import QAConfigError, QAError, UnsupportedModelError, one_line
from qakit.family import prepare_model
from qakit.heads import resolve_head
from qakit.outputs import ADAPTER_CONFIG, carry_threshold

MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the inputs a graph may take, in this order
OUTPUTS = ("start_logits", "end_logits")
COPIED = ("README.md",)  # what the model folder says about itself, kept beside the graph (and its threshold)
# protobuf holds at most 2 GiB: weights above this size go to an external data file beside the graph
# (`model.onnx.data`, referenced by a relative name, so the folder stays relocatable)
EXTERNAL_DATA_BYTES = 1536 * 2**20


def load_span_model(model_dir: str) -> tuple[torch.nn.Module, Any]:
    """(model in float32 and eval mode, tokenizer) of a model folder, a LoRA adapter folder merged into its base
    first; anything but a trained span head is refused, so no graph is written around a random head."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise QAConfigError(f"{model_dir}: no such folder; pass the model folder (config.json and the weights)")
    adapter = read_adapter(model_dir)
    if adapter is None and not (folder / "config.json").is_file():
        raise QAConfigError(f"{model_dir} has no config.json (nor {ADAPTER_CONFIG}), so it is not a model folder")
    base = adapter["base_model_name_or_path"] if adapter else model_dir
    config = AutoConfig.from_pretrained(base)
    head = resolve_head(config, "auto", False)
    if head.name != "span":
        raise UnsupportedModelError(f"{model_dir} holds a {head.name} head ({', '.join(config.architectures)}): "
                                    "ONNX export supports span heads (start/end logits) only")
    try:
        model, info = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32,
                                                                    output_loading_info=True)
    except ValueError as err:  # no ...ForQuestionAnswering class for this config
        raise UnsupportedModelError(f"{model_dir}: {config.model_type} has no span head class, and ONNX export "
                                    "supports span heads only") from err
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir).merge_and_unload()
    elif info["missing_keys"]:
        raise UnsupportedModelError(f"{model_dir}: its weights have no trained span head (missing "
                                    f"{', '.join(sorted(info['missing_keys']))}): fine-tune it first")
    tokenizer_source = model_dir if (folder / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    prepare_model(model, tokenizer)  # refuses a class without start/end positions; gives the tokenizer a pad
    return model.eval(), tokenizer


def graph_inputs(model: torch.nn.Module, tokenizer: Any) -> list[str]:
    """The inputs the exported graph takes: those of ids/mask/types that the model's forward takes and the
    tokenizer makes (RoBERTa's forward takes token types its tokenizer never makes: the graph has none)."""
    params = inspect.signature(model.forward).parameters
    made = set(getattr(tokenizer, "model_input_names", None) or INPUTS)
    if "input_ids" not in params:
        raise UnsupportedModelError(f"{type(model).__name__} takes no input_ids, so it cannot be exported")
    return [name for name in INPUTS if name in params and (name == "input_ids" or name in made)]


class SpanLogits(torch.nn.Module):
    """The span-head model as the graph sees it: named tensor inputs in, (start_logits, end_logits) out."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.model(**{name: given[name] for name in self.names})
        return out.start_logits, out.end_logits


def example_inputs(tokenizer: Any, names: list[str]) -> dict[str, torch.Tensor]:
    """Two (question, context) pairs of different lengths, padded: real ids in the tokenizer's own layout, a
    padded row so the mask's path is traced, and no axis of size 0 or 1 (torch.export would fix it)."""
    enc = tokenizer(["Who kept the lighthouse?", "When?"],
                    ["In 1874 the keeper, Thomas Reed, wrote in his journal.", "In 1874."],
                    padding=True, return_tensors="pt")
    ids = enc["input_ids"]
    fallback = {"attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return {name: enc[name] if name in enc else fallback[name] for name in names}


def write_graph(model: torch.nn.Module, tokenizer: Any, path: Path, opset: int | None) -> bool:
    """The fp32 graph at `path` with dynamic batch and sequence axes; True when its weights went to an external
    data file (`path` + ".data") because they exceed what one protobuf file holds."""
    names = graph_inputs(model, tokenizer)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    try:
        torch.onnx.export(SpanLogits(model, names).eval(), (), str(path), kwargs=example_inputs(tokenizer, names),
                          dynamo=True, input_names=names, output_names=list(OUTPUTS), opset_version=opset,
                          dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                          external_data=external, verbose=False)
    except torch.onnx.errors.OnnxExporterError as err:  # its own text is a page of advice; the cause says why
        cause = err.__cause__ or err
        why = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise UnsupportedModelError(f"{type(model).__name__} could not be exported to ONNX: {why}") from err
    return external


def quantize_int8(source: Path, target: Path, external: bool) -> None:
    """Dynamic int8 quantization: MatMul/Gemm weights stored as int8, activations quantized as they come."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                     use_external_data_format=external)


def check_out_dir(out: Path) -> None:
    """OUT_DIR must be new, empty, or an earlier export (which is replaced whole): never a folder of other files."""
    if out.exists() and not out.is_dir():
        raise QAConfigError(f"{out} is a file: pass a folder to write the export to")
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_FILE).is_file():
        raise QAConfigError(f"{out} is not empty and holds no earlier export ({MODEL_FILE}): choose a new or "
                            "empty folder, so no other files are mixed with or replaced by the export")


def export_onnx(model_dir: str, out_dir: str, int8: bool = False, opset: int | None = None) -> Path:
    """Export a span-head model folder into `out_dir`: model.onnx (fp32), model_int8.onnx with `int8`,
    config.json, the tokenizer files, and the folder's null_threshold.json and README.md. Everything is written
    into a temporary folder beside `out_dir` and renamed into place, so a failure leaves no half folder."""
    out = Path(out_dir)
    check_out_dir(out)
    model, tokenizer = load_span_model(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it owner-only; the export is for everyone the umask allows
    try:
        external = write_graph(model, tokenizer, stage / MODEL_FILE, opset)
        if int8:
            quantize_int8(stage / MODEL_FILE, stage / INT8_FILE, external)
        model.config.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        for name in COPIED:
            if (Path(model_dir) / name).is_file():
                shutil.copy2(Path(model_dir) / name, stage / name)
        carry_threshold(model_dir, stage)  # recorded for the graph's files, so threshold="model" uses it
        replace_folder(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def replace_folder(stage: Path, out: Path) -> None:
    """`stage` renamed to `out`; an earlier export (or empty folder) there is moved aside first, then removed."""
    if not out.exists():
        stage.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    out.rename(old / out.name)
    try:
        stage.rename(out)
    except OSError:
        (old / out.name).rename(out)  # the earlier export back where it was
        raise
    shutil.rmtree(old, ignore_errors=True)


class OnnxQAModel:
    """An exported folder run by onnxruntime on CPU, driven like a torch span-head model.

    `forward(input_ids, [attention_mask], [token_type_ids], start_positions=None, end_positions=None)` lists
    exactly the graph's inputs, so code that reads `inspect.signature(model.forward)` sends only those. A graph
    input left out is filled as transformers fills it (mask: all ones, token types: zeros); the positions are
    accepted and ignored (no loss is computed: this model only answers).
    """

    device = torch.device("cpu")
    dtype = torch.float32
    training = False  # as an nn.Module in eval mode reports it

    def __init__(self, session: onnxruntime.InferenceSession, config: Any, folder: str):
        self.session = session
        self.config = config
        self.name_or_path = folder
        self.base_model = self
        self.input_names = [i.name for i in session.get_inputs()]
        self.signature = inspect.Signature(
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               default=inspect.Parameter.empty if name == "input_ids" else None)
             for name in [*self.input_names, "start_positions", "end_positions"]])

        def forward(*args: Any, **kwargs: Any) -> QuestionAnsweringModelOutput:
            return self.run(self.signature.bind(*args, **kwargs).arguments)

        forward.__signature__ = self.signature
        forward.__doc__ = "Start and end logits of a batch (torch int tensors in, float32 tensors out)."
        self.forward = forward

    @classmethod
    def load(cls, folder: str, int8: bool = False, threads: int | None = None) -> "OnnxQAModel":
        """The exported folder's graph (fp32, or int8 with `int8`) on `threads` threads (default torch's)."""
        path = Path(folder) / (INT8_FILE if int8 else MODEL_FILE)
        if not path.is_file():
            if int8:
                raise QAConfigError(f"{folder} has no int8 graph ({path.name}): export with --int8 (python -m "
                                    f"qakit.onnx MODEL_DIR {folder} --int8)")
            raise QAConfigError(f"{folder} has no ONNX graph ({path.name}): run python -m qakit.onnx MODEL_DIR "
                                f"{folder} first")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(session, AutoConfig.from_pretrained(folder), folder)

    def run(self, given: dict[str, Any]) -> QuestionAnsweringModelOutput:
        """The graph on the given inputs (missing mask/types filled as transformers does)."""
        ids = torch.as_tensor(given["input_ids"])
        fill = {"attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        feed = {name: np.ascontiguousarray(torch.as_tensor(
                    given[name] if given.get(name) is not None else fill[name]).to(torch.int64).cpu().numpy())
                for name in self.input_names}
        start, end = self.session.run(list(OUTPUTS), feed)
        return QuestionAnsweringModelOutput(start_logits=torch.from_numpy(start).float(),
                                            end_logits=torch.from_numpy(end).float())

    def __call__(self, *args: Any, **kwargs: Any) -> QuestionAnsweringModelOutput:
        return self.forward(*args, **kwargs)

    def eval(self) -> "OnnxQAModel":
        return self

    def to(self, device: Any) -> "OnnxQAModel":
        """Only the CPU: the session runs on onnxruntime's CPU provider."""
        if torch.device(device).type != "cpu":
            raise QAConfigError(f"the ONNX model ({self.name_or_path}) runs on the CPU only, not on {device}: "
                                "use the torch model for an accelerator")
        return self

    def get_output_embeddings(self) -> None:
        return None

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """None that torch sees: the weights live in the graph."""
        return iter(())

    def parameters(self, *args: Any, **kwargs: Any) -> Iterator[torch.nn.Parameter]:
        return iter(())

    def modules(self) -> Iterator[torch.nn.Module]:
        """None (code that looks for a position table in the modules finds none and takes the tokenizer's limit)."""
        return iter(())


def main(argv: list[str] | None = None) -> None:
    """The command: export, then list what was written with sizes; a user error is one line and exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m qakit.onnx", description="Export a span-head model folder "
                                     "to ONNX (fp32, optionally int8) for onnxruntime.")
    parser.add_argument("model_dir", help="a trained model folder (or LoRA adapter folder: merged first)")
    parser.add_argument("out_dir", help="the folder to write (new, empty, or an earlier export)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (dynamic int8 weights)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    args = parser.parse_args(argv)
    try:
        out = export_onnx(args.model_dir, args.out_dir, int8=args.int8, opset=args.opset)
    except (QAError, OSError) as err:
        print(f"qakit.onnx: error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    print(f"Wrote {out}:")
    for path in sorted(out.iterdir()):
        print(f"  {path.name:<28} {path.stat().st_size / 2**20:9.2f} MB")


if __name__ == "__main__":
    main()
