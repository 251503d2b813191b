"""Conversation context for the text model: the turns before a text, written as one string that the
tokenizer appends after the text (services/text/tokenize.py). The same function serves training,
evaluation and the service, so the model reads context exactly as it was trained to.

The model reads `<text> [SEP] <newest earlier turn> | <the one before> | ... [SEP]`:
- The text comes first and is never cut for its context; the context fills the model's context budget
  (`emomesh_context_tokens`) and its oldest turns are what falls off.
- Each turn is tagged with who said it relative to the text's author: "me:" for the author's own earlier
  words, "other:" for anyone else. Names do not generalise from a TV script to a user and an assistant;
  "same speaker or not" does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

SAME_SPEAKER_TAG = "me:"
OTHER_SPEAKER_TAG = "other:"
TURN_SEPARATOR = " | "


class Turn(Protocol):
    """An earlier turn: the proto's ConversationTurn and the evaluation adapters' one both fit."""

    @property
    def speaker(self) -> str: ...

    @property
    def text(self) -> str: ...


def context_text(turns: Sequence[Turn], speaker: str) -> str:
    """The turns before a text said by `speaker` (turns oldest first, as a conversation is stored), as the
    model reads them: newest first, tagged by speaker, blank turns skipped; "" for no context."""
    parts = []
    for turn in reversed(turns):
        text = " ".join(turn.text.split())
        if text:
            tag = SAME_SPEAKER_TAG if turn.speaker == speaker else OTHER_SPEAKER_TAG
            parts.append(f"{tag} {text}")
    return TURN_SEPARATOR.join(parts)
