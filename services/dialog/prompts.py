"""Prompt building, validation and the offline fallback texts. Pure: no I/O besides reading the
templates (services/dialog/templates/) once.

The chat prompt is a system message (world-view, this turn's emotions, persona, rules, safety
rules: see templates/system.j2), then the history window as user/assistant messages, oldest first,
then the user's new message."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from emomesh.errors import InvalidInput
from emomesh.labels import LABELS, MODALITY_NAMES, NUM_LABELS, polarity_name, status_name
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2
from services.dialog.fence import new_nonce, sanitize_fenced_text
from services.dialog.history import StoredTurn

TEMPLATE_DIR = Path(__file__).parent / "templates"

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

PERSONA_NAMES: dict[int, str] = {
    dialog_pb2.PERSONA_KIND_DAILY_CHAT: "daily_chat",
    dialog_pb2.PERSONA_KIND_COUNSELLING: "counselling",
    dialog_pb2.PERSONA_KIND_MOCK_INTERVIEW: "mock_interview",
    dialog_pb2.PERSONA_KIND_DEBATE: "debate",
    dialog_pb2.PERSONA_KIND_CUSTOM: "custom",
}
DEFAULT_PERSONA = "daily_chat"


# A message this short (in words) carries little: the prompt asks the model to draw the person out.
SHORT_INPUT_WORDS = 3

# Emotions that call for less pressure in a mock interview, and those that allow more.
TENSE_EMOTIONS = {"angry", "disgust", "fear", "sad"}
COMPOSED_EMOTIONS = {"happy", "neutral"}

Message = dict[str, str]


# ---------------------------------------------------------------------------------------------
# validation


def validate_session_id(session_id: str) -> str:
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        shown = session_id if len(session_id) <= 80 else session_id[:80] + "..."
        raise InvalidInput(f"session_id {shown!r} is invalid: it must match [A-Za-z0-9_-]{{1,64}}")
    return session_id


def validate_message(message: str, max_chars: int) -> str:
    text = message.strip()
    if not text:
        raise InvalidInput("message is empty")
    if len(text) > max_chars:
        raise InvalidInput(f"message is {len(text)} characters; the limit is {max_chars}")
    return text


@dataclass(frozen=True)
class PersonaChoice:
    name: str
    # The user's own description, already sanitised; only for the custom persona.
    custom: str | None = None


def sanitize_custom_persona(text: str) -> str:
    """The description as it goes inside its fence: normalised, invisible and control characters
    and anything that looks like a fence marker removed (see fence.py; newlines and tabs kept)."""
    return sanitize_fenced_text(text, "persona.custom_description")


def resolve_persona(persona: dialog_pb2.Persona, max_custom_chars: int) -> PersonaChoice:
    kind = persona.kind
    if kind == dialog_pb2.PERSONA_KIND_UNSPECIFIED:
        if persona.custom_description:
            raise InvalidInput("persona.custom_description needs persona.kind = PERSONA_KIND_CUSTOM")
        return PersonaChoice(DEFAULT_PERSONA)
    if kind not in PERSONA_NAMES:
        known = ", ".join(dialog_pb2.PersonaKind.Name(k) for k in PERSONA_NAMES)
        raise InvalidInput(f"unknown persona kind {kind}; use one of {known}")
    name = PERSONA_NAMES[kind]
    if name != "custom":
        if persona.custom_description:
            raise InvalidInput("persona.custom_description is only used with PERSONA_KIND_CUSTOM")
        return PersonaChoice(name)
    description = persona.custom_description.strip()
    if not description:
        raise InvalidInput("PERSONA_KIND_CUSTOM needs persona.custom_description")
    if len(description) > max_custom_chars:
        raise InvalidInput(
            f"persona.custom_description is {len(description)} characters; the limit is {max_custom_chars}"
        )
    sanitized = sanitize_custom_persona(description)
    if not sanitized:
        raise InvalidInput("persona.custom_description has no usable text")
    if len(sanitized) > max_custom_chars:
        # NFKC can expand a character (up to 18 for U+FDFA): the limit holds for what is sent.
        raise InvalidInput(
            f"persona.custom_description is {len(sanitized)} characters after Unicode normalisation; "
            f"the limit is {max_custom_chars}"
        )
    return PersonaChoice(name, sanitized)


def validate_distribution(distribution: common_pb2.EmotionDistribution, where: str) -> None:
    """An empty distribution means "unknown"; a present one must be 7 finite, non-negative values."""
    probs = distribution.probabilities
    if not probs:
        return
    if len(probs) != NUM_LABELS:
        raise InvalidInput(f"{where}.probabilities has {len(probs)} values; expected {NUM_LABELS}")
    if not all(math.isfinite(p) and p >= 0 for p in probs) or sum(probs) <= 0:
        raise InvalidInput(f"{where}.probabilities must be finite, non-negative and not all zero")


def validate_emotion(context: dialog_pb2.EmotionContext) -> None:
    validate_distribution(context.fused.distribution, "emotion.fused.distribution")
    for i, modality in enumerate(context.modalities):
        validate_distribution(modality.distribution, f"emotion.modalities[{i}].distribution")


# ---------------------------------------------------------------------------------------------
# pure helpers


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate, deliberately on the high side: about 4 characters per token for
    alphabetic scripts, one token per CJK character, plus a few tokens of per-message overhead."""
    wide = sum(1 for c in text if unicodedata.east_asian_width(c) in ("W", "F"))
    return 4 + wide + math.ceil((len(text) - wide) / 4)


def select_history(turns: Sequence[StoredTurn], token_budget: int) -> list[StoredTurn]:
    """The newest turns that fit the token budget together, oldest first. An assistant turn whose
    user turn was cut off is dropped too, so the window starts with the user."""
    selected: list[StoredTurn] = []
    used = 0
    for turn in reversed(turns):
        cost = estimate_tokens(turn.text)
        if used + cost > token_budget:
            break
        selected.append(turn)
        used += cost
    selected.reverse()
    while selected and selected[0].role != "user":
        selected.pop(0)
    return selected


def is_short_input(message: str) -> bool:
    return len(message.split()) <= SHORT_INPUT_WORDS and estimate_tokens(message) <= 12


def _top(distribution: common_pb2.EmotionDistribution) -> tuple[str, float] | None:
    probs = list(distribution.probabilities)
    if len(probs) != NUM_LABELS or sum(probs) <= 0:
        return None
    total = sum(probs)
    index = max(range(NUM_LABELS), key=lambda i: probs[i])
    return LABELS[index], probs[index] / total


def _scores(distribution: common_pb2.EmotionDistribution, floor: float = 0.05) -> str:
    """'happy 62%, neutral 21%, sad 9%': the emotions at or above floor, most probable first."""
    probs = list(distribution.probabilities)
    total = sum(probs)
    if len(probs) != NUM_LABELS or total <= 0:
        return ""
    ranked = sorted(zip(LABELS, (p / total for p in probs), strict=True), key=lambda lp: -lp[1])
    shown = [f"{label} {p:.0%}" for i, (label, p) in enumerate(ranked) if i == 0 or p >= floor]
    return ", ".join(shown)


def _modality_name(modality: common_pb2.Modality) -> str:
    return MODALITY_NAMES.get(modality, "unspecified channel")


def top_emotion(context: dialog_pb2.EmotionContext | None) -> str | None:
    if context is None:
        return None
    top = _top(context.fused.distribution)
    return top[0] if top else None


def emotion_view(context: dialog_pb2.EmotionContext | None) -> dict[str, Any]:
    """What templates/system.j2 shows about this turn's perception."""
    if context is None:
        return {"available": False, "modalities": []}
    fused = context.fused
    top = _top(fused.distribution)
    modalities = [
        {
            "name": _modality_name(m.modality),
            "status": status_name(m.status),
            "scores": _scores(m.distribution),
            "reliability": f"{m.reliability:.2f}",
            "detail": m.detail,
        }
        for m in context.modalities
    ]
    if top is None:
        return {"available": False, "modalities": modalities}
    return {
        "available": True,
        "top": top[0],
        "confidence": f"{top[1]:.2f}",
        "polarity": polarity_name(fused.polarity),
        "distribution": _scores(fused.distribution),
        "weights": ", ".join(f"{_modality_name(w.modality)} {w.weight:.2f}" for w in fused.weights),
        "missing": ", ".join(_modality_name(m) for m in fused.missing),
        "conflict": fused.conflict,
        "conflicting": ", ".join(_modality_name(m) for m in fused.conflicting),
        "conflict_detail": fused.conflict_detail,
        "modalities": modalities,
    }


def interview_pressure(emotion: str | None) -> str:
    if emotion in TENSE_EMOTIONS:
        return "lower"
    if emotion in COMPOSED_EMOTIONS:
        return "raise"
    return "steady"


def trajectory(history: Sequence[StoredTurn]) -> str:
    """'sad, sad, neutral': the perceived emotion of each earlier user turn that had one."""
    labels = []
    for turn in history:
        if turn.role == "user" and turn.emotion is not None:
            top = _top(turn.emotion.distribution)
            if top is not None:
                labels.append(top[0])
    return ", ".join(labels)


# ---------------------------------------------------------------------------------------------
# templates


class PromptBuilder:
    def __init__(self, template_dir: Path = TEMPLATE_DIR) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(template_dir),
            undefined=jinja2.StrictUndefined,  # a typo in a template fails loudly, not silently empty
            autoescape=False,  # plain text for an LLM, not HTML
            keep_trailing_newline=False,
        )
        # Load every template now: a missing or broken file fails at start-up.
        self.templates = {name: self.env.get_template(name) for name in self.env.list_templates(extensions=["j2"])}

    def render(self, name: str, **context: Any) -> str:
        return self.templates[name].render(**context).strip()

    def persona_text(self, persona: PersonaChoice, emotion: str | None) -> str:
        if persona.custom is not None:
            return ""
        return self.render(f"personas/{persona.name}.j2", pressure=interview_pressure(emotion))

    def system_prompt(
        self,
        persona: PersonaChoice,
        context: dialog_pb2.EmotionContext | None,
        history: Sequence[StoredTurn],
        short_input: bool,
    ) -> str:
        return self.render(
            "system.j2",
            emotion=emotion_view(context),
            trajectory=trajectory(history),
            persona={"custom": persona.custom, "text": self.persona_text(persona, top_emotion(context))},
            short_input=short_input,
            # Fresh for every prompt, so the user cannot write the closing marker (fence.py).
            fence=new_nonce(persona.custom or ""),
        )

    def chat_messages(
        self,
        persona: PersonaChoice,
        context: dialog_pb2.EmotionContext | None,
        history: Sequence[StoredTurn],
        message: str,
    ) -> list[Message]:
        messages = [
            {"role": "system", "content": self.system_prompt(persona, context, history, is_short_input(message))}
        ]
        messages += [{"role": turn.role, "content": turn.text} for turn in history]
        messages.append({"role": "user", "content": message})
        return messages

    def greeting_messages(self, persona: PersonaChoice, returning: bool) -> list[Message]:
        system = self.system_prompt(persona, None, [], short_input=False)
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": self.render("greeting.j2", returning=returning)},
        ]

    def describe_messages(self, clues: Sequence[dialog_pb2.ModalityClue]) -> list[Message]:
        views = [
            {
                "name": _modality_name(c.modality),
                "description": sanitize_fenced_text(c.description),
                "scores": _scores(c.distribution),
            }
            for c in clues
        ]
        fence = new_nonce(*(view["description"] for view in views))
        return [
            {"role": "system", "content": self.render("describe_system.j2")},
            {"role": "user", "content": self.render("describe_user.j2", clues=views, fence=fence)},
        ]

    def fallback_reply(self, persona: PersonaChoice, context: dialog_pb2.EmotionContext | None, message: str) -> str:
        conflict = context is not None and context.fused.conflict
        return self.render(
            "fallback_reply.j2",
            persona=persona.name,
            emotion=top_emotion(context),
            conflict=conflict,
            short_input=is_short_input(message),
        )

    def fallback_greeting(self, persona: PersonaChoice) -> str:
        return self.render("fallback_greeting.j2", persona=persona.name)

    def fallback_describe(self, clues: Sequence[dialog_pb2.ModalityClue]) -> str:
        scored = []
        combined = [0.0] * NUM_LABELS
        for clue in clues:
            top = _top(clue.distribution)
            if top is None:
                continue
            scored.append({"name": _modality_name(clue.modality), "top": top[0], "confidence": f"{top[1]:.0%}"})
            total = sum(clue.distribution.probabilities)
            combined = [c + p / total for c, p in zip(combined, clue.distribution.probabilities, strict=True)]
        overall = LABELS[max(range(NUM_LABELS), key=lambda i: combined[i])]
        return self.render(
            "fallback_describe.j2",
            clues_with_scores=scored,
            agree=len({c["top"] for c in scored}) == 1,
            overall=overall,
        )
