import pytest

from emomesh.labels import LABELS, distribution_from_probs
from emotion.common.v1 import common_pb2
from emotion.dialog.v1 import dialog_pb2
from services.dialog.prompts import PERSONA_NAMES, PersonaChoice, PromptBuilder
from tests.unit.dialog.helpers import emotion_context, one_hot

BUILDER = PromptBuilder()


@pytest.mark.parametrize("persona", sorted(PERSONA_NAMES.values()))
@pytest.mark.parametrize("label", [*LABELS, None])
def test_every_persona_and_emotion_gets_a_reply_ending_with_a_question(persona: str, label: str | None) -> None:
    context = emotion_context(label) if label else None
    reply = BUILDER.fallback_reply(PersonaChoice(persona, "x" if persona == "custom" else None), context, "hello there")
    assert reply.endswith("?")
    assert 20 < len(reply) < 400


def test_fallback_reflects_the_emotion_and_the_persona() -> None:
    sad = emotion_context("sad")
    counselling = BUILDER.fallback_reply(PersonaChoice("counselling"), sad, "it was a long day")
    daily = BUILDER.fallback_reply(PersonaChoice("daily_chat"), sad, "it was a long day")
    happy = BUILDER.fallback_reply(PersonaChoice("daily_chat"), emotion_context("happy"), "it was a long day")
    assert "heavy" in counselling and "heavy" in daily and counselling != daily
    assert "good spirits" in happy


def test_fallback_mentions_conflict_and_draws_out_short_input() -> None:
    reply = BUILDER.fallback_reply(PersonaChoice("daily_chat"), emotion_context("angry", conflict=True), "fine")
    assert "mixed signals" in reply and "a bit more" in reply


def test_fallback_greeting_differs_per_persona() -> None:
    greetings = {BUILDER.fallback_greeting(PersonaChoice(name)) for name in PERSONA_NAMES.values()}
    assert len(greetings) == len(PERSONA_NAMES)
    assert all(g.endswith("?") for g in greetings)


def test_fallback_describe_summarises_each_channel() -> None:
    def clue(modality: common_pb2.Modality, label: str) -> dialog_pb2.ModalityClue:
        return dialog_pb2.ModalityClue(modality=modality, distribution=distribution_from_probs(one_hot(label, 0.8)))

    agree = BUILDER.fallback_describe([clue(common_pb2.MODALITY_AUDIO, "sad"), clue(common_pb2.MODALITY_TEXT, "sad")])
    assert "audio channel points to sad (80%)" in agree and "agree, so sad" in agree
    conflict = BUILDER.fallback_describe(
        [clue(common_pb2.MODALITY_VISION, "happy"), clue(common_pb2.MODALITY_TEXT, "angry")]
    )
    assert "disagree" in conflict
    text_only = BUILDER.fallback_describe([dialog_pb2.ModalityClue(description="a transcript")])
    assert "no classifier scores" in text_only
