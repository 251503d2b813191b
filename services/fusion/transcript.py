"""How far Analyze trusts text that it read from the audio transcript rather than from the caller.

The text service scores the words it is given and says, through its reliability, whether it can read
their language (1 for English, 0.8 for a machine translation, 0.2 for a language it could neither
read nor translate). It cannot know whether the words were really said: German speech through an
English-only recogniser comes back as fluent English nonsense that the text model labels confidently.
The recogniser does know how sure it was, so text from a transcript is discounted by it:

    no text modality at all   when the transcript is empty or no_speech_prob >= NO_SPEECH_MAX (0.6)
    reliability = text_reliability x asr_confidence
    asr_confidence = logprob_trust x (1 - no_speech_prob)
    logprob_trust = clip((avg_logprob - LOGPROB_FAILED) / (LOGPROB_CONFIDENT - LOGPROB_FAILED), 0, 1)
                  = 0 at a mean token log-probability of -1.0 or below, 1 at -0.4 or above, linear between

The product reads as "the words were heard right AND the text model can read them": the two errors are
independent, and either alone is enough to make the text worthless. The anchors are Whisper's own:
-1.0 is its `log_prob_threshold` (below it Whisper counts a decoding as failed and retries at a higher
temperature) and 0.6 its `no_speech_threshold`. -0.4 is where clean speech lands: on espeak-ng clips
Whisper base gave -0.35 for English, -0.52 to -0.59 for German, -0.78 to -0.84 for Mandarin (right
language, half the characters wrong); tiny.en gave -0.30 for English but -0.96 to -1.18 for its
English "transcripts" of German and Mandarin (docs/fusion.md). A transcript from an audio service
that does not report these fields (both 0) is trusted as before.

Pure functions only: the orchestrator applies them, the tests check them."""

from __future__ import annotations

from emotion.audio.v1 import audio_pb2

# A transcript this likely to hold no speech is not read as text at all (Whisper's no_speech_threshold).
NO_SPEECH_MAX = 0.6
# Mean token log-probability at which a transcript is worthless (Whisper's log_prob_threshold) ...
LOGPROB_FAILED = -1.0
# ... and from which it is fully trusted.
LOGPROB_CONFIDENT = -0.4


def no_text_reason(transcript: audio_pb2.Transcript) -> str | None:
    """Why a transcript gives no text to analyse (empty, or of no speech), or None when it gives some."""
    if not transcript.text.strip():
        return "audio gave no transcript"
    if transcript.no_speech_prob >= NO_SPEECH_MAX:
        return f"the audio transcript is of no speech (no-speech probability {transcript.no_speech_prob:.2f})"
    return None


def asr_confidence(avg_logprob: float, no_speech_prob: float) -> float:
    """How sure the recogniser was of its words, in [0, 1] (formula in the module docstring)."""
    logprob_trust = (avg_logprob - LOGPROB_FAILED) / (LOGPROB_CONFIDENT - LOGPROB_FAILED)
    speech = 1.0 - no_speech_prob
    return min(1.0, max(0.0, logprob_trust)) * min(1.0, max(0.0, speech))


def transcript_text_reliability(text_reliability: float, transcript: audio_pb2.Transcript) -> float:
    """The reliability of text read from `transcript`: the text service's own (0 = not reported,
    counted as 1, as fusion does) times the recogniser's confidence."""
    readable = text_reliability if text_reliability > 0 else 1.0
    return readable * asr_confidence(transcript.avg_logprob, transcript.no_speech_prob)


def describe_confidence(transcript: audio_pb2.Transcript) -> str:
    """The recogniser's confidence in words, for a modality's detail."""
    confidence = asr_confidence(transcript.avg_logprob, transcript.no_speech_prob)
    return (
        f"transcript confidence {confidence:.2f}: mean log-probability {transcript.avg_logprob:.2f}, "
        f"no-speech probability {transcript.no_speech_prob:.2f}"
    )
