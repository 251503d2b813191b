"""Encoded live audio decoded as its bytes arrive (services/fusion/container.py): a file-like of chunks,
and the decoder thread on formats a browser or an encoder streams, with a broken stream and a cancel."""

from __future__ import annotations

import asyncio
import io
import threading

import av
import numpy as np
import pytest

from emomesh.errors import InvalidInput, TooLarge
from services.fusion.container import ChunkStream, ContainerDecoder


def tone_file(fmt: str, codec: str, seconds: float = 2.0, rate: int = 48_000) -> bytes:
    """A 440 Hz tone encoded by PyAV, as a client's encoder would stream it."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16).reshape(1, -1)
        for start in range(0, samples.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(samples[:, start : start + 960], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def test_reads_wait_for_chunks_and_the_end_is_sticky() -> None:
    stream = ChunkStream(max_pending_bytes=100)
    read: list[bytes] = []
    reader = threading.Thread(
        target=lambda: read.extend([stream.read(4), stream.read(10), stream.read(1), stream.read(1)])
    )
    reader.start()
    stream.feed(b"abcdef")
    stream.feed(b"gh")
    stream.end()
    reader.join(5)
    assert not reader.is_alive()
    # A read returns what one chunk holds; after the end every read is empty (end of file).
    assert read == [b"abcd", b"ef", b"g", b"h"]
    assert stream.read(10) == b"" and stream.read(10) == b""
    stream.feed(b"late")  # after the end: ignored
    assert stream.read(10) == b""


def test_too_many_bytes_waiting_are_refused() -> None:
    stream = ChunkStream(max_pending_bytes=10)
    stream.feed(b"12345678")
    with pytest.raises(TooLarge, match="18 bytes of encoded audio wait to be decoded; the limit is 10"):
        stream.feed(b"9" * 10)


async def decode(data: bytes, chunk: int = 3000) -> tuple[np.ndarray, InvalidInput | None]:
    """Feeds `data` in chunks as a stream would, then collects what was decoded once it has finished."""
    decoder = ContainerDecoder()
    decoder.start()
    parts: list[np.ndarray] = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        parts += decoder.drain()
        await asyncio.sleep(0)
    decoder.end()
    await asyncio.to_thread(decoder._thread.join, 10)
    assert decoder.finished
    parts += decoder.drain()
    return (np.concatenate(parts) if parts else np.zeros(0, np.int16)), decoder.error


@pytest.mark.parametrize(
    ("fmt", "codec"), [("webm", "libopus"), ("ogg", "libopus"), ("mp3", "mp3"), ("wav", "pcm_s16le")]
)
async def test_streamed_formats_decode_to_16_khz_mono(fmt: str, codec: str) -> None:
    samples, error = await decode(tone_file(fmt, codec))
    assert error is None
    assert samples.dtype == np.int16
    assert abs(len(samples) / 16_000 - 2.0) < 0.05
    # The tone survives: most of its energy at 440 Hz.
    spectrum = np.abs(np.fft.rfft(samples[4000:12000].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16_000 / 8000 - 440) < 10


async def test_bytes_that_are_no_audio_end_with_invalid_input() -> None:
    samples, error = await decode(b"\x00" * 5000)
    assert len(samples) == 0
    assert error is not None and "the encoded audio could not be decoded" in error.message


async def test_stop_ends_a_decoder_waiting_for_bytes() -> None:
    decoder = ContainerDecoder()
    decoder.start()
    decoder.feed(tone_file("ogg", "libopus")[:2000])  # a header, then nothing more
    await asyncio.sleep(0.1)
    assert not decoder.finished  # waiting for bytes
    decoder.stop()
    decoder._thread.join(5)
    assert not decoder._thread.is_alive() and decoder.finished
