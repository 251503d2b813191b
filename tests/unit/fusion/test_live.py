"""The pure rules of a live stream (services/fusion/live.py), each alone with the times passed in."""

from __future__ import annotations

import asyncio
import io
import math
import wave
from collections.abc import Sequence

import numpy as np
import pytest

from emomesh.errors import InvalidInput
from emomesh.labels import LABELS, label_index
from emotion.common.v1 import common_pb2
from services.fusion.live import (
    FRESH_FOR_S,
    AudioBuffer,
    ChangeDetector,
    FreshResults,
    LatestFrame,
    RateLimit,
    Smoother,
    Utterances,
    WindowSchedule,
    emotion_of,
    wav_bytes,
)

RATE = 16000


def one_hot(label: str) -> np.ndarray:
    probs = np.zeros(len(LABELS))
    probs[label_index(label)] = 1.0
    return probs


def probs_with(**by_label: float) -> np.ndarray:
    probs = np.zeros(len(LABELS))
    for label, p in by_label.items():
        probs[label_index(label)] = p
    return probs


# -- LatestFrame ------------------------------------------------------------------------------


async def test_the_newest_frame_replaces_one_not_taken_and_counts_it_dropped() -> None:
    slot: LatestFrame[str] = LatestFrame()
    assert slot.put("frame 0") is False
    assert slot.put("frame 1") is True
    assert slot.put("frame 2") is True
    assert slot.dropped == 2
    assert await slot.take() == "frame 2"
    # Taken: the next frame replaces nothing.
    assert slot.put("frame 3") is False
    assert slot.dropped == 2
    assert await slot.take() == "frame 3"


async def test_take_waits_for_a_frame() -> None:
    slot: LatestFrame[str] = LatestFrame()
    taking = asyncio.create_task(slot.take())
    await asyncio.sleep(0)
    assert not taking.done()
    slot.put("frame 0")
    assert await asyncio.wait_for(taking, 1) == "frame 0"


async def test_a_closed_mailbox_gives_its_last_frame_then_none() -> None:
    slot: LatestFrame[str] = LatestFrame()
    slot.put("last frame")
    slot.close()
    assert await slot.take() == "last frame"
    assert await slot.take() is None


async def test_close_wakes_every_waiting_taker_with_none() -> None:
    slot: LatestFrame[str] = LatestFrame()
    takers = [asyncio.create_task(slot.take()) for _ in range(2)]
    await asyncio.sleep(0)
    slot.close()
    assert await asyncio.wait_for(asyncio.gather(*takers), 1) == [None, None]


# -- RateLimit --------------------------------------------------------------------------------


def test_rate_limit_allows_n_per_window_then_refuses() -> None:
    limit = RateLimit(3, window_s=1.0)
    assert [limit.allow(t) for t in (0.0, 0.1, 0.2)] == [True, True, True]
    assert limit.allow(0.3) is False
    assert limit.count(0.3) == 3
    # A refused event does not count against the window.
    assert limit.allow(0.99) is False
    # The first event leaves the window one window after it came.
    assert limit.allow(1.0) is True
    assert limit.allow(1.05) is False
    assert limit.count(1.05) == 3
    assert limit.count(5.0) == 0


# -- AudioBuffer ------------------------------------------------------------------------------


def pcm16(samples: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def test_audio_buffer_holds_mono_samples_with_positions_from_the_start() -> None:
    buffer = AudioBuffer(RATE, channels=1, capacity_s=1.0)
    buffer.append(pcm16([1, 2, 3]))
    buffer.append(pcm16([4, 5]))
    assert buffer.end == 5
    assert buffer.seconds == pytest.approx(5 / RATE)
    window = buffer.window(1, 4)
    assert window is not None
    assert window.tolist() == [2, 3, 4]


def test_audio_buffer_averages_the_channels() -> None:
    buffer = AudioBuffer(RATE, channels=2, capacity_s=1.0)
    # Interleaved left/right frames: (100, 300), (-50, -150), (7, 9).
    buffer.append(pcm16([100, 300, -50, -150, 7, 9]))
    assert buffer.end == 3
    window = buffer.window(0, 3)
    assert window is not None
    assert window.dtype == np.int16
    assert window.tolist() == [200, -100, 8]


@pytest.mark.parametrize(("channels", "size"), [(1, 3), (2, 6)])
def test_audio_buffer_refuses_a_chunk_of_partial_sample_frames(channels: int, size: int) -> None:
    buffer = AudioBuffer(RATE, channels=channels, capacity_s=1.0)
    with pytest.raises(InvalidInput, match=rf"an audio chunk of {size} bytes does not hold whole sample frames"):
        buffer.append(b"\x00" * size)
    assert buffer.end == 0


def test_audio_buffer_forgets_audio_beyond_capacity_but_keeps_positions() -> None:
    buffer = AudioBuffer(sample_rate=10, channels=1, capacity_s=0.5)  # holds 5 samples
    assert buffer.capacity == 5
    buffer.append(pcm16(range(8)))
    assert (buffer.start, buffer.end) == (3, 8)
    assert buffer.seconds == pytest.approx(0.8)
    window = buffer.window(3, 8)
    assert window is not None
    assert window.tolist() == [3, 4, 5, 6, 7]
    buffer.append(pcm16([8, 9]))
    assert (buffer.start, buffer.end) == (5, 10)
    window = buffer.window(5, 10)
    assert window is not None
    assert window.tolist() == [5, 6, 7, 8, 9]


def test_audio_buffer_window_is_none_for_audio_not_held() -> None:
    buffer = AudioBuffer(sample_rate=10, channels=1, capacity_s=0.5)
    buffer.append(pcm16(range(8)))
    assert buffer.window(2, 6) is None  # sample 2 was let go
    assert buffer.window(4, 9) is None  # sample 8 has not come yet
    assert buffer.window(5, 5) is None  # empty
    assert buffer.window(6, 4) is None  # backwards


def test_audio_buffer_window_is_a_copy() -> None:
    buffer = AudioBuffer(sample_rate=10, channels=1, capacity_s=1.0)
    buffer.append(pcm16([1, 2, 3]))
    window = buffer.window(0, 3)
    assert window is not None
    window[0] = 99
    again = buffer.window(0, 3)
    assert again is not None
    assert again.tolist() == [1, 2, 3]


# -- wav_bytes --------------------------------------------------------------------------------


def test_wav_bytes_round_trip_through_the_wave_module() -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234], dtype=np.int16)
    with wave.open(io.BytesIO(wav_bytes(samples, 22050)), "rb") as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 22050
        assert reader.getnframes() == len(samples)
        read = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert read.tolist() == samples.tolist()


# -- WindowSchedule ---------------------------------------------------------------------------


def schedule() -> WindowSchedule:
    return WindowSchedule(window=3 * RATE, hop=int(1.5 * RATE))


def test_windows_are_3_s_every_1_5_s() -> None:
    windows = schedule()
    assert windows.due(3 * RATE - 1) is None
    assert windows.due(3 * RATE) == (0, 3 * RATE)
    assert windows.due(4 * RATE) is None  # the next is not complete yet, and the first is taken
    assert windows.due(int(4.5 * RATE)) == (int(1.5 * RATE), int(4.5 * RATE))
    assert windows.skipped == 0
    assert windows.next_index == 2


def test_a_late_schedule_takes_the_newest_window_and_counts_the_skipped() -> None:
    windows = schedule()
    assert windows.due(3 * RATE) == (0, 3 * RATE)
    # 9 s received: windows 1.5-4.5, 3-6 and 4.5-7.5 s are due too, but only the newest, 6-9 s, is taken.
    assert windows.due(9 * RATE) == (6 * RATE, 9 * RATE)
    assert windows.skipped == 3
    assert windows.due(9 * RATE) is None


def test_final_window_covers_the_audio_after_the_last_window() -> None:
    windows = schedule()
    windows.due(3 * RATE)  # took 0-3 s
    # 1 s after the last window's end: a window ending at the end of the audio.
    assert windows.final(4 * RATE) == (1 * RATE, 4 * RATE)


def test_final_window_needs_a_third_of_a_window_of_new_audio() -> None:
    windows = schedule()
    windows.due(3 * RATE)
    assert windows.final(3 * RATE + RATE - 1) is None  # under 1 s after the last window
    assert windows.final(3 * RATE) is None


def test_final_window_of_a_short_stream_starts_at_zero() -> None:
    windows = schedule()
    assert windows.final(2 * RATE) == (0, 2 * RATE)
    assert windows.final(RATE - 1) is None
    assert windows.final(0) is None


# -- Utterances -------------------------------------------------------------------------------


def test_speech_windows_grow_an_utterance_until_a_pause_ends_it() -> None:
    utterances = Utterances(max_samples=15 * RATE)
    assert not utterances.active
    assert utterances.add(0, 3 * RATE, speech=True) is None
    assert utterances.active
    assert utterances.add(int(1.5 * RATE), int(4.5 * RATE), speech=True) is None
    assert (utterances.start, utterances.end) == (0, int(4.5 * RATE))
    # The pause ends the utterance at the end of its last speech window.
    assert utterances.add(3 * RATE, 6 * RATE, speech=False) == (0, int(4.5 * RATE))
    assert not utterances.active
    # More silence ends nothing; the next speech starts a new utterance.
    assert utterances.add(int(4.5 * RATE), int(7.5 * RATE), speech=False) is None
    assert utterances.add(6 * RATE, 9 * RATE, speech=True) is None
    assert utterances.start == 6 * RATE


def test_an_utterance_ends_at_its_length_limit() -> None:
    utterances = Utterances(max_samples=6 * RATE)
    assert utterances.add(0, 3 * RATE, speech=True) is None
    assert utterances.add(int(1.5 * RATE), int(4.5 * RATE), speech=True) is None
    assert utterances.add(3 * RATE, 6 * RATE, speech=True) == (0, 6 * RATE)
    assert not utterances.active


def test_finish_ends_the_utterance_in_progress_once() -> None:
    utterances = Utterances(max_samples=15 * RATE)
    assert utterances.finish() is None
    utterances.add(0, 3 * RATE, speech=True)
    assert utterances.finish() == (0, 3 * RATE)
    assert utterances.finish() is None


# -- FreshResults -----------------------------------------------------------------------------


def result(modality: common_pb2.Modality) -> common_pb2.ModalityResult:
    return common_pb2.ModalityResult(modality=modality, status=common_pb2.MODALITY_STATUS_OK)


def modalities(results: list[common_pb2.ModalityResult]) -> list[int]:
    return [r.modality for r in results]


def test_the_default_lifetimes() -> None:
    assert FRESH_FOR_S == {
        common_pb2.MODALITY_VISION: 1.0,
        common_pb2.MODALITY_AUDIO: 6.0,
        common_pb2.MODALITY_TEXT: 30.0,
    }


def test_a_face_is_forgotten_after_a_second_but_speech_counts_for_six() -> None:
    fresh = FreshResults()
    fresh.update(result(common_pb2.MODALITY_VISION), now=10.0)
    fresh.update(result(common_pb2.MODALITY_AUDIO), now=10.0)
    both = [common_pb2.MODALITY_VISION, common_pb2.MODALITY_AUDIO]
    assert modalities(fresh.current(10.0)) == both
    assert modalities(fresh.current(11.0)) == both
    assert modalities(fresh.current(11.01)) == [common_pb2.MODALITY_AUDIO]
    assert modalities(fresh.current(16.0)) == [common_pb2.MODALITY_AUDIO]
    assert modalities(fresh.current(16.01)) == []


def test_a_newer_result_replaces_and_renews_its_modality() -> None:
    fresh = FreshResults()
    fresh.update(result(common_pb2.MODALITY_VISION), now=0.0)
    newer = result(common_pb2.MODALITY_VISION)
    newer.reliability = 0.5
    fresh.update(newer, now=0.9)
    assert fresh.current(1.5) == [newer]


def test_forget_drops_a_modality() -> None:
    fresh = FreshResults()
    fresh.update(result(common_pb2.MODALITY_TEXT), now=0.0)
    fresh.forget(common_pb2.MODALITY_TEXT)
    fresh.forget(common_pb2.MODALITY_AUDIO)  # not held: nothing happens
    assert fresh.current(0.0) == []


# -- Smoother ---------------------------------------------------------------------------------


def test_the_first_distribution_is_the_state() -> None:
    smoother = Smoother(time_constant_s=2.0)
    assert smoother.update(one_hot("happy"), now=5.0).tolist() == one_hot("happy").tolist()


def test_the_state_moves_63_percent_of_the_way_in_one_time_constant() -> None:
    smoother = Smoother(time_constant_s=2.0)
    smoother.update(one_hot("happy"), now=0.0)
    state = smoother.update(one_hot("sad"), now=2.0)
    moved = 1 - math.exp(-1)  # 0.632
    assert state[label_index("sad")] == pytest.approx(moved)
    assert state[label_index("happy")] == pytest.approx(1 - moved)
    assert state.sum() == pytest.approx(1.0)
    # Three time constants in all: 95% of the way.
    state = smoother.update(one_hot("sad"), now=6.0)
    assert state[label_index("sad")] == pytest.approx(1 - math.exp(-3))


def test_a_distribution_at_the_same_time_does_not_move_the_state() -> None:
    smoother = Smoother(time_constant_s=2.0)
    smoother.update(one_hot("happy"), now=1.0)
    assert smoother.update(one_hot("sad"), now=1.0).tolist() == one_hot("happy").tolist()


def test_time_constant_zero_follows_every_distribution() -> None:
    smoother = Smoother(time_constant_s=0.0)
    smoother.update(one_hot("happy"), now=0.0)
    assert smoother.update(one_hot("sad"), now=0.01).tolist() == one_hot("sad").tolist()


# -- ChangeDetector ---------------------------------------------------------------------------


def test_the_first_emotion_is_a_change_from_none() -> None:
    changes = ChangeDetector(margin=0.05)
    assert changes.update(probs_with(happy=0.6, sad=0.4)) == (None, label_index("happy"))
    assert changes.current == label_index("happy")
    assert changes.update(probs_with(happy=0.7, sad=0.3)) is None


def test_a_challenger_within_the_margin_is_not_a_change() -> None:
    changes = ChangeDetector(margin=0.05)
    changes.update(probs_with(happy=0.6, sad=0.4))
    assert changes.update(probs_with(happy=0.48, sad=0.52)) is None
    assert changes.current == label_index("happy")


def test_a_lead_beyond_the_margin_is_a_change() -> None:
    changes = ChangeDetector(margin=0.05)
    changes.update(probs_with(happy=0.6, sad=0.4))
    assert changes.update(probs_with(happy=0.45, sad=0.55)) == (label_index("happy"), label_index("sad"))
    assert changes.current == label_index("sad")
    # And back, under the same rule.
    assert changes.update(probs_with(happy=0.52, sad=0.48)) is None
    assert changes.update(probs_with(happy=0.7, sad=0.3)) == (label_index("sad"), label_index("happy"))


# -- emotion_of -------------------------------------------------------------------------------


def test_emotion_of_maps_label_indexes_to_the_contract() -> None:
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert [emotion_of(i) for i in range(len(LABELS))] == [
        common_pb2.EMOTION_ANGRY,
        common_pb2.EMOTION_DISGUST,
        common_pb2.EMOTION_FEAR,
        common_pb2.EMOTION_HAPPY,
        common_pb2.EMOTION_SAD,
        common_pb2.EMOTION_SURPRISE,
        common_pb2.EMOTION_NEUTRAL,
    ]
    assert emotion_of(None) == common_pb2.EMOTION_UNSPECIFIED


def test_an_utterance_after_skipped_windows_starts_where_the_unanalysed_audio_begins() -> None:
    utterances = Utterances(max_samples=100)
    # The lane skipped windows 0-3 and 1.5-4.5 (earliest 0) and heard speech in 3-6: the words start at 0.
    assert utterances.add(30, 60, True, earliest=0) is None
    assert utterances.add(45, 75, False) == (0, 60)
    # Without a skip, earliest is past the window's start and changes nothing.
    assert utterances.add(60, 90, True, earliest=75) is None
    assert utterances.finish() == (60, 90)
