"""Small message builders shared by the dialog unit tests."""

from __future__ import annotations

import re
from collections.abc import Sequence

from emomesh.labels import LABELS, distribution_from_probs
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2


def one_hot(label: str, confidence: float = 0.7) -> list[float]:
    rest = (1 - confidence) / (len(LABELS) - 1)
    return [confidence if name == label else rest for name in LABELS]


def emotion_context(
    label: str, *, conflict: bool = False, modalities: Sequence[common_pb2.ModalityResult] = ()
) -> dialog_pb2.EmotionContext:
    fused = common_pb2.FusedEmotion(distribution=distribution_from_probs(one_hot(label)), conflict=conflict)
    if conflict:
        fused.conflicting.extend([common_pb2.MODALITY_VISION, common_pb2.MODALITY_TEXT])
        fused.conflict_detail = "vision happy 0.80 (positive) vs text angry 0.70 (negative): opposite polarity"
    return dialog_pb2.EmotionContext(fused=fused, modalities=modalities)


def persona_fence(system: str) -> tuple[str, str, str, str]:
    """(before, nonce, block, after) of a system prompt with a custom persona, checking that the
    prompt has exactly one opening and one closing fence line, with the same nonce."""
    openings = re.findall(r"^<<<USER_PERSONA ([0-9a-f]{16})$", system, flags=re.MULTILINE)
    assert len(openings) == 1, openings
    nonce = openings[0]
    opening, closing = f"<<<USER_PERSONA {nonce}\n", f"\nUSER_PERSONA {nonce}>>>\n"
    assert system.count(opening) == 1 and system.count(closing) == 1
    before, rest = system.split(opening)
    block, after = rest.split(closing)
    return before, nonce, block, after
