"""Late fusion arithmetic: renormalisation, drop-out rules, polarity, conflicts, weights files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from emomesh.errors import InvalidInput
from emomesh.labels import LABELS, distribution_from_probs, label_index
from emotion.common.v1 import common_pb2
from services.fusion.config import DEFAULT_WEIGHTS_FILE, FusionSettings
from services.fusion.fuse import (
    FusionConfig,
    fuse,
    fuse_matrix,
    js_divergence,
    load_fusion_file,
    load_weights_file,
    validate_weights,
)

V, A, T = common_pb2.MODALITY_VISION, common_pb2.MODALITY_AUDIO, common_pb2.MODALITY_TEXT
OK = common_pb2.MODALITY_STATUS_OK


def peaked(label: str, confidence: float = 0.9) -> np.ndarray:
    probs = np.full(len(LABELS), (1 - confidence) / (len(LABELS) - 1))
    probs[label_index(label)] = confidence
    return probs


def result(
    modality: common_pb2.Modality,
    probs: np.ndarray,
    reliability: float = 1.0,
    status: common_pb2.ModalityStatus = OK,
) -> common_pb2.ModalityResult:
    return common_pb2.ModalityResult(
        modality=modality, status=status, distribution=distribution_from_probs(probs), reliability=reliability
    )


def weights_of(fused: common_pb2.FusedEmotion) -> dict[int, float]:
    return {w.modality: w.weight for w in fused.weights}


CONFIG = FusionConfig(weights={"vision": 0.5, "audio": 0.2, "text": 0.3})


def test_weighted_average_with_all_modalities() -> None:
    pv, pa, pt = peaked("happy"), peaked("sad"), peaked("neutral")
    fused = fuse([result(V, pv), result(A, pa), result(T, pt)], CONFIG)
    expected = 0.5 * pv + 0.2 * pa + 0.3 * pt
    np.testing.assert_allclose(fused.distribution.probabilities, expected, rtol=1e-5)
    assert fused.distribution.top == common_pb2.EMOTION_HAPPY
    assert weights_of(fused) == pytest.approx({V: 0.5, A: 0.2, T: 0.3})
    assert list(fused.missing) == []


def test_missing_modality_renormalises_remaining_weights() -> None:
    pv, pt = peaked("happy"), peaked("angry")
    fused = fuse([result(V, pv), result(T, pt)], CONFIG)
    assert weights_of(fused) == pytest.approx({V: 0.5 / 0.8, T: 0.3 / 0.8})
    np.testing.assert_allclose(fused.distribution.probabilities, (0.5 * pv + 0.3 * pt) / 0.8, rtol=1e-5)
    assert list(fused.missing) == [A]


def test_low_reliability_and_failed_statuses_drop_out() -> None:
    results = [
        result(V, peaked("happy"), reliability=0.1),
        result(A, peaked("angry"), status=common_pb2.MODALITY_STATUS_TIMED_OUT),
        result(T, peaked("sad"), reliability=0.9),
    ]
    fused = fuse(results, CONFIG)
    assert weights_of(fused) == pytest.approx({T: 1.0})
    assert fused.distribution.top == common_pb2.EMOTION_SAD
    assert sorted(fused.missing) == [V, A]


def test_unset_reliability_counts_as_reliable() -> None:
    fused = fuse([result(V, peaked("fear"), reliability=0.0)], CONFIG)
    assert weights_of(fused) == pytest.approx({V: 1.0})


def test_nothing_usable_gives_empty_fusion_listing_all_missing() -> None:
    fused = fuse([result(A, peaked("happy"), status=common_pb2.MODALITY_STATUS_UNAVAILABLE)], CONFIG)
    assert not fused.HasField("distribution")
    assert fused.polarity == common_pb2.POLARITY_UNSPECIFIED
    assert sorted(fused.missing) == [V, A, T]


def test_zero_weight_participants_fall_back_to_equal_weights() -> None:
    config = FusionConfig(weights={"vision": 1.0, "audio": 0.0, "text": 0.0})
    fused = fuse([result(A, peaked("happy")), result(T, peaked("happy"))], config)
    assert weights_of(fused) == pytest.approx({A: 0.5, T: 0.5})
    assert list(fused.missing) == [V]  # audio and text are not "asked for" with weight 0


@pytest.mark.parametrize(
    ("label", "polarity"),
    [
        ("happy", common_pb2.POLARITY_POSITIVE),
        ("surprise", common_pb2.POLARITY_NEUTRAL),
        ("neutral", common_pb2.POLARITY_NEUTRAL),
        ("angry", common_pb2.POLARITY_NEGATIVE),
        ("sad", common_pb2.POLARITY_NEGATIVE),
    ],
)
def test_polarity_of_fused_distribution(label: str, polarity: int) -> None:
    assert fuse([result(T, peaked(label))], CONFIG).polarity == polarity


def test_polarity_sums_mass_over_classes() -> None:
    # happy is the top label, but the four negative classes together hold more mass.
    probs = np.array([0.15, 0.1, 0.1, 0.3, 0.15, 0.1, 0.1])
    assert fuse([result(T, probs)], CONFIG).polarity == common_pb2.POLARITY_NEGATIVE


def test_smiling_face_with_angry_words_is_a_conflict() -> None:
    fused = fuse([result(V, peaked("happy")), result(A, peaked("neutral")), result(T, peaked("angry"))], CONFIG)
    assert fused.conflict
    assert list(fused.conflicting) == [V, T]
    assert "vision happy" in fused.conflict_detail and "text angry" in fused.conflict_detail


def test_confident_different_labels_of_same_polarity_conflict() -> None:
    fused = fuse([result(V, peaked("fear", 0.95)), result(T, peaked("disgust", 0.95))], CONFIG)
    assert fused.conflict
    assert "confident different labels" in fused.conflict_detail


def test_agreement_and_weak_disagreement_are_not_conflicts() -> None:
    agreeing = fuse([result(V, peaked("sad")), result(T, peaked("sad", 0.6))], CONFIG)
    assert not agreeing.conflict and not agreeing.conflicting
    unsure = fuse([result(V, peaked("happy", 0.35)), result(T, peaked("angry", 0.35))], CONFIG)
    assert not unsure.conflict
    # Near uniform: 4 of 7 classes are negative, so its negative mass is ~0.6, but it says nothing.
    shrug = fuse([result(V, peaked("happy", 1.0)), result(A, peaked("angry", 0.25))], CONFIG)
    assert not shrug.conflict
    poker_face = fuse([result(V, peaked("neutral", 0.95)), result(T, peaked("angry", 0.95))], CONFIG)
    assert not poker_face.conflict


def test_dropped_modality_cannot_cause_conflict() -> None:
    fused = fuse([result(V, peaked("happy")), result(T, peaked("angry"), reliability=0.05)], CONFIG)
    assert not fused.conflict


def test_js_divergence_bounds() -> None:
    p = peaked("happy", 1.0)
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert js_divergence(p, peaked("sad", 1.0)) == pytest.approx(1.0)


def distribution(probabilities: list[float]) -> common_pb2.EmotionDistribution:
    return common_pb2.EmotionDistribution(probabilities=probabilities)


def raw(
    modality: common_pb2.Modality,
    probabilities: list[float],
    status: common_pb2.ModalityStatus = OK,
    reliability: float = 1.0,
) -> common_pb2.ModalityResult:
    """A result with exactly these probabilities (no normalisation on the way)."""
    return common_pb2.ModalityResult(
        modality=modality, status=status, distribution=distribution(probabilities), reliability=reliability
    )


NAN, INF = float("nan"), float("inf")
UNIFORM = [1 / 7] * 7
# Values a newer (or broken) client can send: proto3 enums are open.
UNKNOWN_MODALITY = cast(common_pb2.Modality, 7)
UNKNOWN_STATUS = cast(common_pb2.ModalityStatus, 42)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([common_pb2.ModalityResult(modality=common_pb2.MODALITY_UNSPECIFIED)], r"results\[0\]: modality must be"),
        (
            [common_pb2.ModalityResult(modality=UNKNOWN_MODALITY, distribution=distribution(UNIFORM))],
            "modality must be .* got 7",
        ),
        ([result(V, peaked("happy")), result(V, peaked("sad"))], r"results\[1\] \(vision\): more than one result"),
        (
            [common_pb2.ModalityResult(modality=V, status=OK)],
            r"\(vision\): distribution must have 7 probabilities, got 0",
        ),
        ([raw(A, [0.5, 0.5])], r"\(audio\): distribution must have 7 probabilities, got 2"),
        ([raw(T, [*UNIFORM, 0.0])], "must have 7 probabilities, got 8"),
        ([raw(T, [0.0] * 7)], r"\(text\): distribution probabilities must sum to 1 .* sum to 0"),
        ([raw(T, [5.0] * 7)], "must sum to 1 \\(within 0.001\\), they sum to 35"),
        ([raw(V, [0.1] * 7)], "they sum to 0.7"),
        ([raw(V, [NAN, 0, 0, 1, 0, 0, 0])], r"\(vision\): distribution probabilities must be finite"),
        ([raw(V, [INF, 0, 0, 1, 0, 0, 0])], "probabilities must be finite"),
        ([raw(A, [-0.5, 0.5, 0, 1, 0, 0, 0])], r"\(audio\): distribution probabilities must not be negative"),
        ([raw(V, UNIFORM, reliability=NAN)], r"\(vision\): reliability must be a number in \[0, 1\], got nan"),
        ([raw(V, UNIFORM, reliability=INF)], "reliability must be a number in .*, got inf"),
        ([raw(A, UNIFORM, reliability=1.5)], r"\(audio\): reliability .* got 1.5"),
        ([raw(T, UNIFORM, reliability=-0.1)], r"\(text\): reliability .* got -0.1"),
        ([raw(V, UNIFORM, status=UNKNOWN_STATUS)], r"results\[0\] \(vision\): unknown status 42"),
        # A result that does not take part is still checked: malformed data is refused, not dropped.
        ([raw(V, [5.0] * 7, status=common_pb2.MODALITY_STATUS_LOW_CONFIDENCE)], "they sum to 35"),
        (
            [raw(A, UNIFORM, status=common_pb2.MODALITY_STATUS_TIMED_OUT, reliability=NAN)],
            r"\(audio\): reliability must be",
        ),
        ([result(V, peaked("happy")), raw(T, [5.0] * 7)], r"results\[1\] \(text\)"),
    ],
)
def test_malformed_results_are_rejected(results: list[common_pb2.ModalityResult], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        fuse(results, CONFIG)


def test_sums_within_the_tolerance_are_accepted_and_renormalised() -> None:
    probs = [0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1 + 0.0009]
    fused = fuse([raw(V, probs)], CONFIG)
    assert sum(fused.distribution.probabilities) == pytest.approx(1.0, abs=1e-6)
    assert fused.distribution.top == common_pb2.EMOTION_HAPPY


def test_reliability_bounds_are_accepted() -> None:
    fused = fuse([raw(V, UNIFORM, reliability=1.0), raw(A, UNIFORM, reliability=0.0)], CONFIG)
    assert weights_of(fused).keys() == {V, A}


def test_failed_results_without_a_distribution_are_valid_and_dropped() -> None:
    results = [
        result(V, peaked("happy")),
        common_pb2.ModalityResult(modality=A, status=common_pb2.MODALITY_STATUS_UNAVAILABLE, detail="down"),
        common_pb2.ModalityResult(modality=T, status=common_pb2.MODALITY_STATUS_MISSING),
    ]
    assert weights_of(fuse(results, CONFIG)) == pytest.approx({V: 1.0})


def test_weights_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"weights": {"vision": 0.2, "audio": 0.3, "text": 0.5}, "weighted_f1": 0.6}))
    assert load_weights_file(path) == {"vision": 0.2, "audio": 0.3, "text": 0.5}


def test_committed_default_weights_file_loads() -> None:
    weights = load_weights_file(DEFAULT_WEIGHTS_FILE)
    assert set(weights) == {"vision", "audio", "text"}
    assert sum(weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"weights": {"smell": 1.0}}, "unknown modalities"),
        ({"weights": {"vision": -1}}, "non-negative"),
        ({"weights": {"vision": "high"}}, "non-negative"),
        ({"weights": {"vision": 0, "audio": 0}}, "at least one"),
        ({"vision": 1.0}, '"weights" object'),
    ],
)
def test_bad_weights_files_are_rejected(tmp_path: Path, document: dict[str, object], message: str) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        load_weights_file(path)


def test_validate_weights_fills_absent_modalities_with_zero() -> None:
    assert validate_weights({"text": 1}) == {"vision": 0.0, "audio": 0.0, "text": 1.0}


def test_fuse_matrix_matches_fuse_with_missing_rows() -> None:
    rng = np.random.default_rng(0)
    probs = {name: rng.dirichlet(np.ones(7), size=4) for name in ("vision", "audio", "text")}
    probs["audio"][1] = np.nan
    probs["vision"][2] = np.nan
    probs["text"][2] = np.nan
    fused = fuse_matrix(probs, CONFIG.weights)
    for row in range(4):
        results = [
            result(m, probs[name][row])
            for m, name in ((V, "vision"), (A, "audio"), (T, "text"))
            if not np.isnan(probs[name][row]).any()
        ]
        np.testing.assert_allclose(fused[row], fuse(results, CONFIG).distribution.probabilities, rtol=1e-5)


def test_settings_load_the_weights_file_and_fail_fast_on_a_bad_one(tmp_path: Path) -> None:
    settings = FusionSettings.from_env({"EMOMESH_FUSION_AUDIO_ADDR": "127.0.0.1:1"})
    assert settings.fusion.weights == load_weights_file(DEFAULT_WEIGHTS_FILE)
    assert (settings.vision_addr, settings.audio_addr) == (None, "127.0.0.1:1")
    bad = tmp_path / "weights.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="EMOMESH_FUSION_WEIGHTS_FILE"):
        FusionSettings.from_env({"EMOMESH_FUSION_WEIGHTS_FILE": str(bad)})


def test_a_neutral_discount_lets_neutral_text_give_up_its_weight() -> None:
    config = FusionConfig(weights={"audio": 0.5, "text": 0.5}, neutral_discount={"text": 1.0})
    neutral_words, angry_voice = peaked("neutral", 0.9), peaked("angry", 0.5)
    fused = fuse([result(A, angry_voice), result(T, neutral_words)], config)
    # Text keeps 1 - 0.9 of its weight: 0.05 against audio's 0.5.
    assert weights_of(fused) == pytest.approx({A: 0.5 / 0.55, T: 0.05 / 0.55})
    assert fused.distribution.top == common_pb2.EMOTION_ANGRY
    # Words that carry an emotion keep (nearly) all of theirs: 1 - 0.1 / 6.
    fused = fuse([result(A, angry_voice), result(T, peaked("happy", 0.9))], config)
    assert weights_of(fused)[T] == pytest.approx((0.5 * (1 - 0.1 / 6)) / (0.5 + 0.5 * (1 - 0.1 / 6)))
    # Without a discount (the default) neutral text weighs as configured.
    plain = fuse([result(A, angry_voice), result(T, neutral_words)], FusionConfig(weights={"audio": 0.5, "text": 0.5}))
    assert weights_of(plain) == pytest.approx({A: 0.5, T: 0.5})


def test_fuse_matrix_applies_the_neutral_discount_as_fuse_does() -> None:
    rng = np.random.default_rng(3)
    probs = {name: rng.dirichlet(np.ones(7) * 0.5, size=6) for name in ("vision", "audio", "text")}
    probs["text"][1] = np.nan
    discount, entropy = {"text": 0.75, "audio": 0.25}, {"text": 0.5, "vision": 1.0}
    config = FusionConfig(weights=CONFIG.weights, neutral_discount=discount, entropy_discount=entropy)
    fused = fuse_matrix(probs, CONFIG.weights, discount, entropy)
    for row in range(6):
        results = [
            result(m, probs[name][row])
            for m, name in ((V, "vision"), (A, "audio"), (T, "text"))
            if not np.isnan(probs[name][row]).any()
        ]
        np.testing.assert_allclose(fused[row], fuse(results, config).distribution.probabilities, rtol=1e-5)


def test_weights_files_may_carry_neutral_discounts(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({"weights": {"audio": 0.6, "text": 0.4}, "neutral_discount": {"text": 1}}))
    loaded = load_fusion_file(path)
    assert loaded.weights == {"vision": 0.0, "audio": 0.6, "text": 0.4}
    assert (loaded.neutral_discount, loaded.entropy_discount) == ({"text": 1.0}, {})
    settings = FusionSettings.from_env({"EMOMESH_FUSION_WEIGHTS_FILE": str(path)})
    assert settings.fusion.neutral_discount == {"text": 1.0} and settings.fusion.entropy_discount == {}
    assert load_fusion_file(DEFAULT_WEIGHTS_FILE).weights == load_weights_file(DEFAULT_WEIGHTS_FILE)
    for kind in ("neutral_discount", "entropy_discount"):
        for bad in ({"text": 1.5}, {"smell": 0.5}, {"text": True}):
            path.write_text(json.dumps({"weights": {"audio": 1}, kind: bad}))
            with pytest.raises(ValueError, match=kind):
                load_fusion_file(path)


def test_an_entropy_discount_lets_a_flat_reading_give_up_its_weight() -> None:
    config = FusionConfig(weights={"audio": 0.5, "text": 0.5}, entropy_discount={"text": 1.0})
    uniform = np.full(len(LABELS), 1 / len(LABELS))
    fused = fuse([result(A, peaked("sad", 0.4)), result(T, uniform)], config)
    assert weights_of(fused) == pytest.approx({A: 1.0, T: 0.0}, abs=1e-9)
    certain = np.eye(len(LABELS))[label_index("happy")]
    fused = fuse([result(A, peaked("sad", 0.4)), result(T, certain)], config)
    assert weights_of(fused) == pytest.approx({A: 0.5, T: 0.5})
