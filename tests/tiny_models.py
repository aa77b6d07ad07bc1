"""Tiny random-weight question-answering models for every architecture in MODELS.md, built offline.

`build_tiny(name, dest)` writes a directory that `AutoConfig`, `AutoTokenizer` and
`AutoModelForQuestionAnswering.from_pretrained(dest)` load: a tokenizer of the architecture's real family
(same class as its real checkpoints resolve to), trained here on a small embedded corpus, plus a model built
from the architecture's own config class with its defaults, only the sizes shrunk.

Tokenizers are built the way real checkpoints ship them: raw vocabulary files (vocab.txt, vocab.json +
merges.txt, a SentencePiece model, ...) are written into a staging directory and loaded with the
tokenizer class's own `from_pretrained`, so the library's own conversion code runs.  Each family is built
once per process and then only saved.

Fixed length: Reformer's axial position embeddings (axial_pos_shape 16 x 16) make training inputs exactly
FIXED_SEQ_LEN = 256 tokens long (pad with padding="max_length"); in eval any length <= 256 works.

Classes are resolved lazily by name, so importing this module works on transformers 4.57 (where ErnieM,
Mega, Nezha and QDQBert still exist) as well as on 5.x (where they are gone).
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
import transformers

FIXED_SEQ_LEN = 256
VOCAB_SIZE = 800  # target; SentencePiece unigram stops earlier on this small corpus
SEED = 0

PROSE = """\
The old lighthouse stood at the northern edge of the island for more than two hundred years. Sailors who \
passed the rocky coast at night looked for its slow white beam, which turned once every twelve seconds. In 1874 \
the keeper, a careful man named Thomas Reed, wrote in his journal that the winter storms had broken three \
windows and flooded the lower room.
Rivers carry water, sand and small stones from the mountains down to the sea. Where a river slows near its \
mouth, it drops the sediment it was carrying, and over many centuries a wide, flat delta can form. Farmers often \
settle on deltas because the soil there is rich and easy to plough.
A computer program is a list of instructions that a machine follows one step at a time. Early programmers wrote \
their instructions on paper cards with holes punched in them. Today most software is written in languages such \
as Python, C and Java, and a single application may contain millions of lines of code.
The city library opened its new reading hall on Monday, 3 March. The hall has 240 seats, large windows facing \
the park, and a small cafe near the entrance. According to the director, Maria Lopez, more than 5,000 visitors \
came during the first week.
Bees are important for many plants because they move pollen from one flower to another. A healthy hive can hold \
about 50,000 bees in the summer. Most of them are workers; the queen lays the eggs, and the drones live only a \
few months.
The university was founded in 1209 by scholars who had left another town after a dispute with its citizens. Its \
colleges are independent institutions, each with its own hall, chapel and library, and students usually live in \
the college where they study.
Volcanoes form where molten rock, called magma, rises through cracks in the crust of the Earth. When the \
pressure becomes too great, the volcano erupts and throws out ash, gas and lava. Some eruptions are quiet, while \
others destroy whole mountains in a few minutes.
In the summer of 1969 two astronauts walked on the surface of the Moon while a third remained in orbit. They \
collected rocks and dust, set up scientific instruments and planted a flag before returning safely to Earth \
four days later.
The orchestra has about ninety musicians, divided into strings, woodwinds, brass and percussion. The conductor \
stands in front of them and keeps the tempo, while the first violinist, called the leader, tunes the whole \
group before the concert begins.
Trains became the fastest way to travel across the country in the nineteenth century. Railway companies built \
stations, bridges and tunnels, and towns that had been quiet villages grew quickly once the line reached them.
Who built the bridge? When did the war end? Where is the capital of France? Why do leaves change colour in \
autumn? How many players are on a football team? What is the name of the longest river in Africa? Which \
company owns the newspaper? Whose idea was the new museum?
"""
CHAR_LINES = [
    " ".join(string.ascii_lowercase),
    " ".join(string.ascii_uppercase),
    " ".join(string.digits),
    " ".join(string.punctuation),
    string.ascii_letters + string.digits,
]
CORPUS = PROSE.splitlines() + CHAR_LINES

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
XLM_SPECIALS = ("<s>", "</s>", "<pad>", "<unk>") + tuple(f"<special{i}>" for i in range(10))
FALCON_SPECIALS = tuple(
    f">>{w}<<"
    for w in "TITLE ABSTRACT INTRODUCTION SUMMARY COMMENT ANSWER QUESTION DOMAIN PREFIX SUFFIX MIDDLE".split()
) + ("<|endoftext|>",)


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary training (cached: several families share one trained vocabulary)


@cache
def _wordpiece_vocab(specials: tuple[str, ...], lowercase: bool) -> tuple[str, ...]:
    """WordPiece tokens in id order, specials first, trained like BERT's (Bert normaliser/pre-tokeniser)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = sorted(set("".join(CHAR_LINES).replace(" ", "")))
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(specials), initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tuple(sorted(tok.get_vocab(), key=tok.get_vocab().get))


@cache
def _bpe_vocab(specials: tuple[str, ...], byte_level: bool, lowercase: bool = False) -> tuple[dict, list]:
    """(vocab, merges) of a BPE: GPT-2 style byte-level, or XLM style with '</w>' word ends."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if byte_level:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        extra = {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()}
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        extra = {"end_of_word_suffix": "</w>"}
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(specials), show_progress=False, **extra
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


@cache
def _sentencepiece_model(model_type: str, **options: Any) -> bytes:
    """A serialized SentencePiece model trained on the corpus; `options` place the special pieces."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    lists = {k: list(v) for k, v in options.items() if isinstance(v, tuple)}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buffer,
        model_type=model_type,
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **{**options, **lists},
    )
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Raw vocabulary files, as real checkpoints ship them


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def _write_merges(path: Path, merges: list[tuple[str, str]], header: bool) -> None:
    lines = (["#version: 0.2"] if header else []) + [f"{a} {b}" for a, b in merges]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def wordpiece_files(specials: tuple[str, ...] = BERT_SPECIALS, lowercase: bool = True) -> Callable[[Path], None]:
    """vocab.txt (BERT, Funnel, MPNet, Splinter, ...)."""

    def write(stage: Path) -> None:
        (stage / "vocab.txt").write_text("\n".join(_wordpiece_vocab(specials, lowercase)) + "\n", encoding="utf-8")

    return write


def rocbert_files(stage: Path) -> None:
    """vocab.txt plus the glyph-shape and pronunciation id maps RoCBert looks every token up in."""
    wordpiece_files()(stage)
    tokens = _wordpiece_vocab(BERT_SPECIALS, True)
    _write_json(stage / "word_shape.json", {t: i % 64 for i, t in enumerate(tokens)})
    _write_json(stage / "word_pronunciation.json", {t: i % 32 for i, t in enumerate(tokens)})


def byte_bpe_files(specials: tuple[str, ...] = ROBERTA_SPECIALS) -> Callable[[Path], None]:
    """vocab.json + merges.txt of a GPT-2 style byte-level BPE (RoBERTa, GPT-2, BART, DeBERTa, ...)."""

    def write(stage: Path) -> None:
        vocab, merges = _bpe_vocab(specials, byte_level=True)
        _write_json(stage / "vocab.json", vocab)
        _write_merges(stage / "merges.txt", merges, header=True)

    return write


def luke_files(stage: Path) -> None:
    """RoBERTa's BPE files plus the entity vocabulary LUKE's tokenizer requires."""
    byte_bpe_files()(stage)
    entities = ["[PAD]", "[UNK]", "[MASK]", "[MASK2]", "France", "Africa", "Moon", "Earth", "Python"]
    _write_json(stage / "entity_vocab.json", {e: i for i, e in enumerate(entities)})


def tokenizer_json_files(specials: tuple[str, ...]) -> Callable[[Path], None]:
    """tokenizer.json only, a byte-level BPE (GPT-NeoX, Bloom, Falcon ship no other vocabulary file)."""

    def write(stage: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        vocab, merges = _bpe_vocab(specials, byte_level=True)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(list(specials))
        tok.save(str(stage / "tokenizer.json"))

    return write


def xlm_bpe_files(lowercase: bool) -> Callable[[Path], None]:
    """vocab.json + merges.txt in XLM's '</w>' BPE format (XLM, FlauBERT; Python tokenizers using Moses)."""

    def write(stage: Path) -> None:
        vocab, merges = _bpe_vocab(XLM_SPECIALS, byte_level=False, lowercase=lowercase)
        _write_json(stage / "vocab.json", vocab)
        _write_merges(stage / "merges.txt", merges, header=False)

    return write


def sentencepiece_files(file_name: str, model_type: str = "unigram", **options: Any) -> Callable[[Path], None]:
    """A SentencePiece model under the file name the tokenizer class expects; `options` go to the trainer."""

    def write(stage: Path) -> None:
        (stage / file_name).write_bytes(_sentencepiece_model(model_type, **options))

    return write


def ernie_m_files(stage: Path) -> None:
    """ErnieM ships a SentencePiece model plus a vocab.txt that maps its pieces (and BERT specials) to ids."""
    import sentencepiece as spm

    model = _sentencepiece_model("unigram", pad_id=0, unk_id=1, bos_id=-1, eos_id=-1)
    (stage / "sentencepiece.bpe.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    pieces = [sp.id_to_piece(i) for i in range(2, sp.get_piece_size())]
    vocab = (*BERT_SPECIALS, *pieces)
    (stage / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def no_files(stage: Path) -> None:
    """Canine works on Unicode code points and has no vocabulary."""


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer families


@dataclass(frozen=True)
class Family:
    """A tokenizer family: the class real checkpoints load as, its raw files, and its constructor arguments.

    `via` names the class whose conversion produced the real checkpoints' tokenizer.json when the target class
    cannot convert raw files itself (FNet's tokenizer.json comes from the ALBERT converter).
    """

    tokenizer_class: str
    write_files: Callable[[Path], None]
    kwargs: dict[str, Any] = field(default_factory=dict)
    via: str | None = None


SPM_ALBERT = dict(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=("[CLS]", "[SEP]", "[MASK]"))
SPM_FAIRSEQ = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)  # <unk> <s> </s>; XLM-R's converter adds the offset
SPM_T5 = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1)

FAMILIES: dict[str, Family] = {
    "bert": Family("BertTokenizer", wordpiece_files()),
    "funnel": Family(
        "FunnelTokenizer", wordpiece_files(("<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "<s>", "</s>"))
    ),
    "mpnet": Family("MPNetTokenizer", wordpiece_files(("<s>", "<pad>", "</s>", "[UNK]", "<mask>"))),
    "splinter": Family("SplinterTokenizer", wordpiece_files(BERT_SPECIALS + ("[QUESTION]",))),
    "layoutlmv2": Family("LayoutLMv2Tokenizer", wordpiece_files()),
    "roformer": Family("RoFormerTokenizer", wordpiece_files()),
    "rocbert": Family("RoCBertTokenizer", rocbert_files),
    "roberta": Family("RobertaTokenizer", byte_bpe_files()),
    "layoutlmv3": Family("LayoutLMv3Tokenizer", byte_bpe_files()),
    "markuplm": Family(
        "MarkupLMTokenizer",
        byte_bpe_files(),
        {"tags_dict": {t: i for i, t in enumerate("a b body div h1 h2 html li p span table td tr ul".split())}},
    ),
    "luke": Family("LukeTokenizer", luke_files),
    "deberta": Family("DebertaTokenizer", byte_bpe_files(("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"))),
    "gpt2": Family("GPT2Tokenizer", byte_bpe_files(("<|endoftext|>",))),
    "opt": Family(
        "GPT2Tokenizer",
        byte_bpe_files(("<s>", "<pad>", "</s>", "<unk>")),
        {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>", "add_bos_token": True},
    ),
    "gpt_neox": Family("GPTNeoXTokenizer", tokenizer_json_files(("<|endoftext|>", "<|padding|>"))),
    "bloom": Family(
        "PreTrainedTokenizerFast",
        tokenizer_json_files(("<unk>", "<s>", "</s>", "<pad>")),
        {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "padding_side": "left"},
    ),
    "falcon": Family(
        "PreTrainedTokenizerFast", tokenizer_json_files(FALCON_SPECIALS), {"eos_token": "<|endoftext|>"}
    ),
    "xlm": Family("XLMTokenizer", xlm_bpe_files(lowercase=True)),
    "flaubert": Family("FlaubertTokenizer", xlm_bpe_files(lowercase=False)),
    "albert": Family("AlbertTokenizer", sentencepiece_files("spiece.model", **SPM_ALBERT)),
    "fnet": Family(
        "FNetTokenizer",
        sentencepiece_files("spiece.model", **{**SPM_ALBERT, "unk_id": 0, "pad_id": 3}),
        via="AlbertTokenizer",
    ),
    "rembert": Family("RemBertTokenizer", sentencepiece_files("sentencepiece.model", **SPM_ALBERT)),
    "big_bird": Family(
        "BigBirdTokenizer",
        sentencepiece_files(
            "spiece.model", pad_id=0, bos_id=1, eos_id=2, unk_id=3, control_symbols=("[SEP]", "[CLS]", "[MASK]")
        ),
    ),
    "deberta_v2": Family(
        "DebertaV2Tokenizer",
        sentencepiece_files(
            "spm.model",
            pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
            unk_id=3, unk_piece="[UNK]", control_symbols=("[MASK]",),
        ),
    ),
    "xlnet": Family(
        "XLNetTokenizer",
        sentencepiece_files(
            "spiece.model", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            control_symbols=("<cls>", "<sep>", "<pad>", "<mask>", "<eod>"), user_defined_symbols=("<eop>",),
        ),
    ),
    "t5": Family("T5Tokenizer", sentencepiece_files("spiece.model", **SPM_T5)),
    "pegasus": Family("PegasusTokenizer", sentencepiece_files("spiece.model", **SPM_T5)),
    "xlm_roberta": Family("XLMRobertaTokenizer", sentencepiece_files("sentencepiece.bpe.model", **SPM_FAIRSEQ)),
    "camembert": Family("CamembertTokenizer", sentencepiece_files("sentencepiece.bpe.model", **SPM_FAIRSEQ)),
    "mbart": Family(
        "MBartTokenizer",
        sentencepiece_files("sentencepiece.bpe.model", **SPM_FAIRSEQ),
        {"src_lang": "en_XX", "tgt_lang": "en_XX"},
    ),
    "llama": Family(
        "LlamaTokenizer",
        sentencepiece_files("tokenizer.model", "bpe", **SPM_FAIRSEQ, byte_fallback=True, split_digits=True),
        {"add_bos_token": True, "add_eos_token": False},
    ),
    "reformer": Family("ReformerTokenizer", sentencepiece_files("spiece.model", "bpe", **SPM_FAIRSEQ)),
    "ernie_m": Family("ErnieMTokenizer", ernie_m_files),
    "canine": Family("CanineTokenizer", no_files),
}


def _resolve(name: str) -> Any:
    """A transformers attribute by name, preferring the 4.x `...Fast` tokenizer (an alias of the class in 5.x)."""
    return getattr(transformers, name + "Fast", None) or getattr(transformers, name)


@cache
def family_tokenizer(family: str) -> Any:
    """The family's tokenizer, built once per process from raw files staged in a temporary directory."""
    spec = FAMILIES[family]
    with tempfile.TemporaryDirectory() as stage_dir, tempfile.TemporaryDirectory() as hub_dir:
        stage = Path(stage_dir)
        spec.write_files(stage)
        if spec.via:
            _resolve(spec.via).from_pretrained(stage, **spec.kwargs).save_pretrained(hub_dir)
            stage = Path(hub_dir)
        return _resolve(spec.tokenizer_class).from_pretrained(stage, **spec.kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Architectures

# One shrunk value per size field, under every naming convention; a row only gets the fields its config has.
SMALL: dict[str, int] = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
    "embedding_size": 32, "max_position_embeddings": 514,
    "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "max_encoder_position_embeddings": 514, "max_decoder_position_embeddings": 514,
    "d_kv": 16, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 2,
    "n_embd": 32, "n_layer": 2, "n_head": 2, "n_inner": 64, "n_positions": 514,
    "emb_dim": 32, "n_layers": 2, "n_heads": 2, "dim": 32, "hidden_dim": 64,
    "d_inner": 64, "d_head": 16, "ffn_dim": 64, "ffn_hidden_size": 64, "word_embed_proj_dim": 32,
    "max_seq_len": 514, "max_positions": 514, "rotary_dim": 8,
}


@dataclass(frozen=True)
class Row:
    """One architecture of MODELS.md.

    `config` holds architecture-specific overrides on top of SMALL; `from_tokenizer` maps config fields to a
    function of the tokenizer (ids and sizes the model must agree on).  `removed_in_v5` rows only exist in
    transformers <= 4.57.x; `needs_package` rows build a config and tokenizer but no weights without it.
    """

    name: str
    class_name: str
    family: str
    config: dict[str, Any] = field(default_factory=dict)
    from_tokenizer: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    max_length: int = 512
    removed_in_v5: bool = False
    needs_package: str | None = None

    @property
    def config_class_name(self) -> str:
        return re.sub(r"ForQuestionAnswering(Simple)?$", "Config", self.class_name)

    def unavailable_reason(self) -> str | None:
        """Why no model can be built here (None when it can)."""
        if not hasattr(transformers, self.config_class_name):
            return f"{self.class_name} needs transformers<=4.57 (installed {transformers.__version__})"
        if self.needs_package and importlib.util.find_spec(self.needs_package) is None:
            return f"{self.class_name} needs the package {self.needs_package}"
        return None


LAYOUT = {"hidden_size": 48, "coordinate_size": 8, "shape_size": 8}  # 4 * coordinate + 2 * shape == hidden
SPARSE_BLOCKS = {"block_size": 16, "num_random_blocks": 2}  # block-sparse from 144 tokens, full attention below
WINDOW = {"attention_window": 32}

ROWS: list[Row] = [
    Row("Albert", "AlbertForQuestionAnswering", "albert", {"embedding_size": 16}),
    Row("Bart", "BartForQuestionAnswering", "roberta"),
    Row("Bert", "BertForQuestionAnswering", "bert"),
    Row("BigBird", "BigBirdForQuestionAnswering", "big_bird", SPARSE_BLOCKS),
    Row("BigBirdPegasus", "BigBirdPegasusForQuestionAnswering", "pegasus", SPARSE_BLOCKS),
    Row("Bloom", "BloomForQuestionAnswering", "bloom"),
    Row("Camembert", "CamembertForQuestionAnswering", "camembert"),
    Row("Canine", "CanineForQuestionAnswering", "canine",
        {"max_position_embeddings": 2048, "num_hash_buckets": 2048}, max_length=2048),
    Row("ConvBert", "ConvBertForQuestionAnswering", "bert"),
    Row("Data2VecText", "Data2VecTextForQuestionAnswering", "roberta"),
    Row("Deberta", "DebertaForQuestionAnswering", "deberta"),
    Row("DebertaV2", "DebertaV2ForQuestionAnswering", "deberta_v2"),
    Row("DistilBert", "DistilBertForQuestionAnswering", "bert"),
    Row("Electra", "ElectraForQuestionAnswering", "bert", {"embedding_size": 16}),
    Row("Ernie", "ErnieForQuestionAnswering", "bert"),
    Row("ErnieM", "ErnieMForQuestionAnswering", "ernie_m", removed_in_v5=True),
    Row("Falcon", "FalconForQuestionAnswering", "falcon"),
    Row("Flaubert", "FlaubertForQuestionAnsweringSimple", "flaubert"),
    Row("FNet", "FNetForQuestionAnswering", "fnet"),
    Row("Funnel", "FunnelForQuestionAnswering", "funnel", {"block_sizes": [1, 1], "num_decoder_layers": 1}),
    Row("GPT2", "GPT2ForQuestionAnswering", "gpt2"),
    Row("GPTNeo", "GPTNeoForQuestionAnswering", "gpt2",
        {"attention_types": [[["global", "local"], 1]], "window_size": 64}),
    Row("GPTNeoX", "GPTNeoXForQuestionAnswering", "gpt_neox"),
    Row("GPTJ", "GPTJForQuestionAnswering", "gpt2"),
    Row("IBert", "IBertForQuestionAnswering", "roberta"),
    Row("LayoutLMv2", "LayoutLMv2ForQuestionAnswering", "layoutlmv2", LAYOUT, needs_package="detectron2"),
    Row("LayoutLMv3", "LayoutLMv3ForQuestionAnswering", "layoutlmv3", LAYOUT),
    Row("LED", "LEDForQuestionAnswering", "roberta", WINDOW),
    Row("Lilt", "LiltForQuestionAnswering", "layoutlmv3", {"hidden_size": 48}),  # layout embeddings: hidden / 6
    Row("Llama", "LlamaForQuestionAnswering", "llama"),
    Row("Longformer", "LongformerForQuestionAnswering", "roberta", WINDOW),
    Row("Luke", "LukeForQuestionAnswering", "luke", {"entity_emb_size": 16},
        {"entity_vocab_size": lambda tok: len(tok.entity_vocab)}),
    Row("Lxmert", "LxmertForQuestionAnswering", "bert",
        {"l_layers": 1, "x_layers": 1, "r_layers": 1, "visual_feat_dim": 16,
         "num_qa_labels": 8, "num_object_labels": 8, "num_attr_labels": 8}),
    Row("MarkupLM", "MarkupLMForQuestionAnswering", "markuplm", {"xpath_unit_hidden_size": 8},
        {"tag_pad_id": lambda tok: tok.pad_tag_id, "subs_pad_id": lambda tok: tok.pad_width,
         "max_depth": lambda tok: tok.max_depth}),
    Row("MBart", "MBartForQuestionAnswering", "mbart"),
    Row("Mega", "MegaForQuestionAnswering", "roberta",
        {"shared_representation_size": 16, "ema_projection_size": 4, "nffn_hidden_size": 64}, removed_in_v5=True),
    Row("MegatronBert", "MegatronBertForQuestionAnswering", "bert"),
    Row("MobileBert", "MobileBertForQuestionAnswering", "bert",
        {"hidden_size": 64, "embedding_size": 16, "intra_bottleneck_size": 32}),
    Row("MPNet", "MPNetForQuestionAnswering", "mpnet"),
    Row("Mpt", "MptForQuestionAnswering", "gpt_neox"),
    Row("Mra", "MraForQuestionAnswering", "roberta"),
    Row("MT5", "MT5ForQuestionAnswering", "t5"),
    Row("Mvp", "MvpForQuestionAnswering", "roberta"),
    Row("Nezha", "NezhaForQuestionAnswering", "bert", {"max_relative_position": 16}, removed_in_v5=True),
    Row("Nystromformer", "NystromformerForQuestionAnswering", "albert"),
    Row("OPT", "OPTForQuestionAnswering", "opt"),
    Row("QDQBert", "QDQBertForQuestionAnswering", "bert", removed_in_v5=True, needs_package="pytorch_quantization"),
    Row("Reformer", "ReformerForQuestionAnswering", "reformer",
        {"attn_layers": ["local", "lsh"], "attention_head_size": 16, "feed_forward_size": 64,
         "axial_pos_shape": [16, 16], "axial_pos_embds_dim": [8, 24], "max_position_embeddings": FIXED_SEQ_LEN,
         "local_attn_chunk_length": 64, "lsh_attn_chunk_length": 64, "num_buckets": 8},
        max_length=FIXED_SEQ_LEN),
    Row("RemBert", "RemBertForQuestionAnswering", "rembert", {"input_embedding_size": 16, "output_embedding_size": 32}),
    Row("Roberta", "RobertaForQuestionAnswering", "roberta"),
    Row("RobertaPreLayerNorm", "RobertaPreLayerNormForQuestionAnswering", "roberta"),
    Row("RoCBert", "RoCBertForQuestionAnswering", "rocbert", {"pronunciation_embed_dim": 16, "shape_embed_dim": 16},
        {"shape_vocab_size": lambda tok: max(tok.word_shape.values()) + 1,
         "pronunciation_vocab_size": lambda tok: max(tok.word_pronunciation.values()) + 1}),
    Row("RoFormer", "RoFormerForQuestionAnswering", "roformer"),
    Row("Splinter", "SplinterForQuestionAnswering", "splinter", {},
        {"question_token_id": lambda tok: tok.question_token_id}),
    Row("SqueezeBert", "SqueezeBertForQuestionAnswering", "bert"),
    Row("T5", "T5ForQuestionAnswering", "t5", {}, {"decoder_start_token_id": lambda tok: tok.pad_token_id}),
    Row("UMT5", "UMT5ForQuestionAnswering", "t5"),
    Row("XLM", "XLMForQuestionAnsweringSimple", "xlm"),
    Row("XLMRoberta", "XLMRobertaForQuestionAnswering", "xlm_roberta"),
    Row("XLMRobertaXL", "XLMRobertaXLForQuestionAnswering", "xlm_roberta"),
    Row("XLNet", "XLNetForQuestionAnsweringSimple", "xlnet"),
    Row("Xmod", "XmodForQuestionAnswering", "xlm_roberta"),
    Row("Yoso", "YosoForQuestionAnswering", "albert"),
]
ROW_BY_NAME = {row.name: row for row in ROWS}

# Config fields holding a special-token id, and the tokenizer attribute they must agree with.
TOKEN_ID_FIELDS = {
    "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "sep_token_id": "sep_token_id",
    "forced_eos_token_id": "eos_token_id",
    "unk_index": "unk_token_id",
    "mask_index": "mask_token_id",
}


def _token_ids(defaults: Any, tok: Any) -> dict[str, int]:
    """Special-token ids for the config, taken from the tokenizer.

    A field is set when its default is not None and the tokenizer has that token (pad: whenever the tokenizer
    has one).  decoder_start_token_id keeps its role: it defaults to the eos, pad or bos id depending on the
    architecture, and becomes the tokenizer's id for that same role.
    """
    ids = {}
    for name, attr in TOKEN_ID_FIELDS.items():
        wanted = getattr(defaults, name, None) is not None or name == "pad_token_id"
        if wanted and getattr(tok, attr, None) is not None:
            ids[name] = getattr(tok, attr)
    start = getattr(defaults, "decoder_start_token_id", None)
    for role in ("eos", "pad", "bos"):
        role_id = getattr(tok, f"{role}_token_id")
        if start is not None and start == getattr(defaults, f"{role}_token_id", None) and role_id is not None:
            ids["decoder_start_token_id"] = role_id
            break
    return ids


def build_config(row: Row, tok: Any) -> Any:
    """The row's config: class defaults, sizes from SMALL/row.config, ids and vocabulary from the tokenizer."""
    config_class = getattr(transformers, row.config_class_name)
    defaults = config_class()
    known = defaults.to_dict()
    kwargs = {k: v for k, v in SMALL.items() if k in known and not isinstance(known[k], (dict, list))}
    kwargs.update(row.config)
    if "vocab_size" in known:
        kwargs["vocab_size"] = len(tok)
    kwargs.update(_token_ids(defaults, tok))
    kwargs.update({name: derive(tok) for name, derive in row.from_tokenizer.items()})
    return config_class(**kwargs)


def tiny_model(name: str, class_name: str | None = None) -> tuple[Any, Any]:
    """The tiny model `name` and its family's tokenizer, in memory (the tokenizer is shared per family).

    `class_name` builds another head on the same config, e.g. "T5ForConditionalGeneration" for generative QA.
    """
    row = ROW_BY_NAME[name]
    reason = row.unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    tok = family_tokenizer(row.family)
    tok.model_max_length = row.max_length
    torch.manual_seed(SEED)
    return getattr(transformers, class_name or row.class_name)(build_config(row, tok)), tok


def build_tiny(name: str, dest: Path, class_name: str | None = None) -> Path:
    """Build the tiny model `name` (a MODELS.md name, e.g. "Bert") into `dest` and return `dest`.

    Without the row's `needs_package`, the config and tokenizer are written with a placeholder weights file.
    """
    row = ROW_BY_NAME[name]
    reason = row.unavailable_reason()
    if reason and not hasattr(transformers, row.config_class_name):
        raise RuntimeError(reason)
    dest = Path(dest)
    if not reason:
        model, tok = tiny_model(name, class_name)
        tok.save_pretrained(dest)
        model.save_pretrained(dest)
        return dest
    # no weights can be made; a placeholder lets loading reach the model's own dependency check
    tok = family_tokenizer(row.family)
    tok.model_max_length = row.max_length  # shared per family: set before every save
    tok.save_pretrained(dest)
    build_config(row, tok).save_pretrained(dest)
    from safetensors.torch import save_file

    save_file({"placeholder": torch.zeros(1)}, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest
