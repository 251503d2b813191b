"""services.text.train_e5: the cached partial fine-tuning computes what the whole model computes, and
the folds keep copies of a text together."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from emomesh.labels import NUM_LABELS  # noqa: E402
from services.text.data import Example  # noqa: E402
from services.text.train import EmotionClassifier  # noqa: E402
from services.text.train_e5 import CachedTexts, SplitEncoder, classify_cached, grouped_folds  # noqa: E402


def tiny_classifier() -> EmotionClassifier:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32
    )
    encoder = transformers.BertModel(config, add_pooling_layer=False)
    return EmotionClassifier(encoder, 16).eval()


@pytest.mark.parametrize("frozen", [0, 2, 3])
def test_cached_bottom_then_top_equals_the_whole_model(frozen: int) -> None:
    classifier = tiny_classifier()
    split = SplitEncoder(classifier.encoder, frozen)
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 6, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        whole = classifier(ids, mask)
        bottom = split.bottom(ids, mask)
        # The cache keeps each text's real tokens only; batching pads them again.
        cache = CachedTexts([bottom[0], bottom[1, :3]])
        hidden, cached_mask = cache.batch([0, 1], torch.device("cpu"))
        cached = classify_cached(split, classifier.head, classifier.dropout, hidden, cached_mask)
    assert torch.equal(cached_mask, mask)
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)
    assert cached.shape == (2, NUM_LABELS)


def test_split_refuses_freezing_every_layer() -> None:
    with pytest.raises(ValueError, match="4 layers"):
        SplitEncoder(tiny_classifier().encoder, 4)


def test_frozen_and_trainable_parameters_partition_the_encoder() -> None:
    encoder = tiny_classifier().encoder
    split = SplitEncoder(encoder, 3)
    together = {id(p) for p in split.frozen_parameters()} | {id(p) for p in split.trainable_parameters()}
    assert together == {id(p) for p in encoder.parameters()}


def test_copies_of_a_text_share_a_fold_and_labels_spread_over_folds() -> None:
    examples = [Example(f"text {i % 40}", i % 40 % 3, "test") for i in range(120)]
    folds = grouped_folds(examples, 3, seed=1)
    fold_of_text: dict[str, set[int]] = {}
    for example, fold in zip(examples, folds, strict=True):
        fold_of_text.setdefault(example.text, set()).add(fold)
    assert all(len(f) == 1 for f in fold_of_text.values())
    for label in range(3):
        assert {f for e, f in zip(examples, folds, strict=True) if e.label == label} == {0, 1, 2}
    assert grouped_folds(examples, 3, seed=1) == folds
