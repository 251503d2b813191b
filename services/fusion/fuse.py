"""Late weighted fusion of per-modality emotion distributions. Pure: no I/O except reading the
weights file, so the service, the weight search and the tests all run the same arithmetic.

Rules (documented in docs/fusion.md):
- Every result is checked first, and a malformed one fails the whole call (InvalidInput, naming the
  result and the field): the modality must be vision, audio or text, once each; the status a known
  one; the reliability a number in [0, 1]; and a distribution, when present (always for OK), 7
  finite, non-negative probabilities summing to 1 within PROBABILITY_SUM_TOLERANCE.
- A result takes part when its status is OK (or unspecified, for Fuse callers) and its reliability
  is at least `min_reliability`. Reliability 0 is read as "not reported" (proto3 cannot tell unset
  from 0) and counts as 1; a modality that wants to be ignored says so with status LOW_CONFIDENCE or
  a small positive reliability.
- fused = sum_m w_m * p_m / sum_m w_m over the participants: the configured weights renormalised
  over whoever took part. If every participant has weight 0, they are weighted equally.
- A reading that says nothing gives up weight (`kept_weight`): with a neutral discount d_m and an
  entropy discount e_m for a modality (weights file's "neutral_discount" / "entropy_discount",
  default 0), its weight is w_m * (1 - d_m * p_m(neutral)) * (1 - e_m * H(p_m) / log 7) before
  renormalising (H: entropy, so H / log 7 is 0 for a certain reading and 1 for a uniform one).
  Neutral is the absence of a signal, and so is a flat distribution: text that reads a fixed,
  emotionless sentence ("Kids are talking by the door", spoken angrily) then hardly moves the voice's
  answer, while words that do carry an emotion, confidently, keep their weight.
- Polarity: emomesh.labels.polarity_of on the fused distribution (happy -> positive; neutral and
  surprise -> neutral; angry, disgust, fear, sad -> negative; the class with most mass wins).
- Conflict between two participants (see `pair_conflict`), both with a top probability of at least
  `conflict_min_top` (a near-uniform distribution says nothing, and 4 of the 7 classes are negative,
  so it would otherwise look negative): opposite polarities (positive vs negative), each held with at
  least `conflict_polarity_mass` of its own probability mass; or
  different confident top labels, neither of them neutral (both >= `conflict_confidence`), whose
  Jensen-Shannon divergence (base 2, 0..1) is at least `conflict_js`. Neutral is the absence of a
  signal (a poker face over angry words is common), so it never conflicts by label alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from emomesh.errors import InvalidInput
from emomesh.labels import (
    LABELS,
    MODALITY_BY_NAME,
    MODALITY_NAMES,
    NUM_LABELS,
    distribution_from_probs,
    polarity_mass,
    polarity_name,
    polarity_of,
)
from emotion.common.v1 import common_pb2

FUSABLE_STATUSES = (common_pb2.MODALITY_STATUS_OK, common_pb2.MODALITY_STATUS_UNSPECIFIED)
KNOWN_STATUSES = frozenset(common_pb2.ModalityStatus.values())
# How far from 1 the probabilities of a distribution may sum: float32 softmax outputs are within
# 1e-6 of it; anything further is a different scale (percentages, logits) or a broken producer.
PROBABILITY_SUM_TOLERANCE = 1e-3
NEUTRAL = LABELS.index("neutral")
EQUAL_WEIGHTS: dict[str, float] = dict.fromkeys(MODALITY_NAMES.values(), 1.0 / len(MODALITY_NAMES))


@dataclass(frozen=True)
class FusionConfig:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(EQUAL_WEIGHTS))
    # Per modality, in [0, 1]: how much of its weight a neutral / a flat reading gives up (module docstring).
    neutral_discount: Mapping[str, float] = field(default_factory=dict)
    entropy_discount: Mapping[str, float] = field(default_factory=dict)
    min_reliability: float = 0.3
    conflict_polarity_mass: float = 0.6
    conflict_js: float = 0.6
    conflict_confidence: float = 0.5
    conflict_min_top: float = 0.35


def validate_weights(raw: Mapping[str, Any]) -> dict[str, float]:
    """Weights for the known modalities: non-negative numbers, not all zero. A modality absent from
    the mapping gets 0 (it never contributes)."""
    unknown = set(raw) - set(MODALITY_BY_NAME)
    if unknown:
        raise ValueError(f"unknown modalities in weights: {sorted(unknown)}")
    weights: dict[str, float] = {}
    for name in MODALITY_BY_NAME:
        value = raw.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weight of {name} must be a non-negative number, got {value!r}")
        weights[name] = float(value)
    if sum(weights.values()) <= 0:
        raise ValueError("at least one weight must be positive")
    return weights


DISCOUNTS = ("neutral_discount", "entropy_discount")


def validate_discount(raw: Mapping[str, Any], kind: str = "neutral_discount") -> dict[str, float]:
    """Discounts (neutral or entropy) of known modalities, each a number in [0, 1]; absent ones get none."""
    unknown = set(raw) - set(MODALITY_BY_NAME)
    if unknown:
        raise ValueError(f"unknown modalities in {kind}: {sorted(unknown)}")
    discounts: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{kind} of {name} must be a number in [0, 1], got {value!r}")
        discounts[name] = float(value)
    return discounts


def _weights_document(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    if not isinstance(document, dict) or not isinstance(document.get("weights"), dict):
        raise ValueError('expected a JSON object with a "weights" object')
    for kind in DISCOUNTS:
        if not isinstance(document.get(kind, {}), dict):
            raise ValueError(f'"{kind}" must be an object of modality: number')
    return document


def load_weights_file(path: Path) -> dict[str, float]:
    """Reads {"weights": {"vision": .., "audio": .., "text": ..}, ...}; other keys (provenance) are ignored."""
    return validate_weights(_weights_document(path)["weights"])


@dataclass(frozen=True)
class FusionFile:
    weights: dict[str, float]
    neutral_discount: dict[str, float]
    entropy_discount: dict[str, float]


def load_fusion_file(path: Path) -> FusionFile:
    """The weights and the optional discounts ({"neutral_discount": {"text": 1.0}, "entropy_discount":
    {...}}) of a weights file."""
    document = _weights_document(path)
    return FusionFile(
        validate_weights(document["weights"]),
        validate_discount(document.get("neutral_discount", {}), "neutral_discount"),
        validate_discount(document.get("entropy_discount", {}), "entropy_discount"),
    )


def kept_weight(probs: np.ndarray, neutral_discount: float, entropy_discount: float) -> np.ndarray:
    """The share of its weight a reading keeps, over the last axis of probs (module docstring):
    (1 - d * p(neutral)) * (1 - e * H(p) / log 7)."""
    p = np.clip(probs, 0.0, 1.0)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1) / math.log(NUM_LABELS)
    return (1.0 - neutral_discount * p[..., NEUTRAL]) * (1.0 - entropy_discount * np.clip(entropy, 0.0, 1.0))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits: 0 for equal distributions, 1 for disjoint ones."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))


@dataclass(frozen=True)
class PairConflict:
    reason: str
    js: float


def pair_conflict(p: np.ndarray, q: np.ndarray, config: FusionConfig) -> PairConflict | None:
    """Whether two participants strongly disagree (see the module docstring), and why."""
    if min(p.max(), q.max()) < config.conflict_min_top:
        return None
    js = js_divergence(p, q)
    mass_p, mass_q = polarity_mass(p), polarity_mass(q)
    pos, neg = common_pb2.POLARITY_POSITIVE, common_pb2.POLARITY_NEGATIVE
    for a, b in ((mass_p, mass_q), (mass_q, mass_p)):
        if a[pos] >= config.conflict_polarity_mass and b[neg] >= config.conflict_polarity_mass:
            return PairConflict("opposite polarity", js)
    top_p, top_q = int(np.argmax(p)), int(np.argmax(q))
    confident = min(p[top_p], q[top_q]) >= config.conflict_confidence
    emotional = NEUTRAL not in (top_p, top_q)
    if top_p != top_q and confident and emotional and js >= config.conflict_js:
        return PairConflict("confident different labels", js)
    return None


@dataclass(frozen=True)
class Participant:
    modality: common_pb2.Modality
    probs: np.ndarray


def distribution_problem(probabilities: Sequence[float]) -> str | None:
    """What is wrong with a distribution's probabilities, or None when it is a valid one."""
    if len(probabilities) != NUM_LABELS:
        return f"must have {NUM_LABELS} probabilities, got {len(probabilities)}"
    values = np.asarray(probabilities, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return "probabilities must be finite numbers"
    if np.any(values < 0):
        return "probabilities must not be negative"
    total = float(values.sum())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        return f"probabilities must sum to 1 (within {PROBABILITY_SUM_TOLERANCE:g}), they sum to {total:.6g}"
    return None


def reliability_problem(reliability: float) -> str | None:
    """What is wrong with a reliability, or None when it is a number in [0, 1]."""
    if not math.isfinite(reliability) or not 0.0 <= reliability <= 1.0:
        return f"reliability must be a number in [0, 1], got {reliability!r}"
    return None


def participants(results: Sequence[common_pb2.ModalityResult], config: FusionConfig) -> list[Participant]:
    """The results that take part in fusion; raises InvalidInput for a malformed result."""
    seen: set[common_pb2.Modality] = set()
    chosen: list[Participant] = []
    for index, result in enumerate(results):
        if result.modality not in MODALITY_NAMES:
            raise InvalidInput(f"results[{index}]: modality must be VISION, AUDIO or TEXT, got {result.modality}")
        name = MODALITY_NAMES[result.modality]
        where = f"results[{index}] ({name})"
        if result.modality in seen:
            raise InvalidInput(f"{where}: more than one result for {name}")
        seen.add(result.modality)
        if result.status not in KNOWN_STATUSES:
            raise InvalidInput(f"{where}: unknown status {result.status}")
        problem = reliability_problem(result.reliability)
        if problem is not None:
            raise InvalidInput(f"{where}: {problem}")
        fusable = result.status in FUSABLE_STATUSES
        values = list(result.distribution.probabilities)
        if fusable or values:
            problem = distribution_problem(values)
            if problem is not None:
                raise InvalidInput(f"{where}: distribution {problem}")
        reliability = result.reliability or 1.0
        if not fusable or reliability < config.min_reliability:
            continue
        arr = np.asarray(values, dtype=np.float64)
        chosen.append(Participant(result.modality, arr / arr.sum()))
    return chosen


def renormalised_weights(chosen: Sequence[Participant], config: FusionConfig) -> dict[common_pb2.Modality, float]:
    """The participants' weights (configured, less their neutral discount) scaled to sum to 1 (equal if all are 0)."""
    raw = {}
    for p in chosen:
        name = MODALITY_NAMES[p.modality]
        kept = kept_weight(p.probs, config.neutral_discount.get(name, 0.0), config.entropy_discount.get(name, 0.0))
        raw[p.modality] = float(config.weights.get(name, 0.0)) * float(kept)
    modalities = [p.modality for p in chosen]
    total = sum(raw.values())
    if total <= 0:
        return {m: 1.0 / len(modalities) for m in modalities}
    return {m: w / total for m, w in raw.items()}


def fuse(results: Sequence[common_pb2.ModalityResult], config: FusionConfig) -> common_pb2.FusedEmotion:
    """Fuses whatever results can take part. With no participant, the answer has no distribution,
    polarity UNSPECIFIED and every configured modality listed as missing."""
    chosen = participants(results, config)
    taking_part = {p.modality for p in chosen}
    configured = [m for m, name in MODALITY_NAMES.items() if config.weights.get(name, 0.0) > 0]
    fused = common_pb2.FusedEmotion(missing=[m for m in configured if m not in taking_part])
    if not chosen:
        return fused
    weights = renormalised_weights(chosen, config)
    probs = sum((weights[p.modality] * p.probs for p in chosen), np.zeros(NUM_LABELS))
    fused.distribution.CopyFrom(distribution_from_probs(probs))
    fused.weights.extend(common_pb2.ModalityWeight(modality=m, weight=w) for m, w in weights.items())
    fused.polarity = polarity_of(probs)
    conflicting: set[common_pb2.Modality] = set()
    details: list[str] = []
    for a, b in combinations(chosen, 2):
        found = pair_conflict(a.probs, b.probs, config)
        if found is None:
            continue
        conflicting.update((a.modality, b.modality))
        details.append(f"{_describe(a)} vs {_describe(b)}: {found.reason} (Jensen-Shannon divergence {found.js:.2f})")
    if conflicting:
        fused.conflict = True
        fused.conflicting.extend(sorted(conflicting))
        fused.conflict_detail = "; ".join(details)
    return fused


def _describe(p: Participant) -> str:
    top = int(np.argmax(p.probs))
    return f"{MODALITY_NAMES[p.modality]} {LABELS[top]} {p.probs[top]:.2f} ({polarity_name(polarity_of(p.probs))})"


def fuse_matrix(
    probs: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    neutral_discount: Mapping[str, float] | None = None,
    entropy_discount: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Vectorised fusion for many samples (the weight search): probs[name] is [N, 7] with NaN rows
    where that modality is missing (or does not take part). Same weights as `fuse` (discounts,
    renormalisation); rows with no modality at all, or whose participants all have weight 0, are
    averaged equally over the participants."""
    names = list(probs)
    neutral, entropy = neutral_discount or {}, entropy_discount or {}
    stacked = np.stack([probs[n] for n in names])  # [M, N, 7]
    present = ~np.isnan(stacked).any(axis=2)  # [M, N]
    configured = np.asarray([weights.get(n, 0.0) for n in names], dtype=np.float64)[:, None]  # [M, 1]
    kept = np.stack(
        [kept_weight(np.nan_to_num(stacked[i]), neutral.get(n, 0.0), entropy.get(n, 0.0)) for i, n in enumerate(names)]
    )
    w = configured * kept * present  # [M, N]
    totals = w.sum(axis=0)
    equal = present / np.maximum(present.sum(axis=0), 1)
    w = np.where(totals > 0, w / np.where(totals > 0, totals, 1), equal)
    return np.einsum("mn,mnk->nk", w, np.nan_to_num(stacked, nan=0.0))
