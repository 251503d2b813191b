"""Encoded audio in a live stream (AUDIO_ENCODING_CONTAINER): the chunks are the consecutive bytes of one
encoded stream, as a browser's MediaRecorder (WebM/Opus) or an encoder writing OGG, MP3, FLAC or WAV
produces them. They are decoded as they arrive, in a thread (PyAV blocks on its reads), into 16 kHz
mono PCM16 that the voice lane reads like any other audio.

A container that needs to seek to be read (an MP4 whose index is at its end) cannot be streamed; its
decoding fails with the decoder's message, which ends the stream with INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import io
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from emomesh.errors import InvalidInput, TooLarge

SAMPLE_RATE = 16_000


class ChunkStream(io.RawIOBase):
    """A read-only, unseekable file whose bytes arrive in chunks from another thread: a read waits for
    bytes or for the end, and after the end every read returns nothing (end of file)."""

    def __init__(self, max_pending_bytes: int) -> None:
        super().__init__()
        self.max_pending_bytes = max_pending_bytes
        self._chunks: deque[bytes] = deque()
        self._pending = 0
        self._ended = False
        self._changed = threading.Condition()

    def feed(self, data: bytes) -> None:
        """Adds bytes; TooLarge when more than max_pending_bytes wait to be decoded (the decoder cannot
        keep up, or the client sends far faster than real time)."""
        with self._changed:
            if self._ended or not data:
                return
            if self._pending + len(data) > self.max_pending_bytes:
                raise TooLarge(
                    f"{self._pending + len(data)} bytes of encoded audio wait to be decoded; "
                    f"the limit is {self.max_pending_bytes}"
                )
            self._chunks.append(data)
            self._pending += len(data)
            self._changed.notify_all()

    def end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        with self._changed:
            while not self._chunks and not self._ended:
                self._changed.wait()
            if not self._chunks:
                return 0
            chunk = self._chunks[0]
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            if n == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[n:]
            self._pending -= n
            return n


class ContainerDecoder:
    """Decodes one encoded audio stream in a thread. Samples, a failure and the end are handed to the
    event loop's thread through `on_samples` (16 kHz mono int16), `on_error` (InvalidInput) and
    `on_done`, always in that order of events and `on_done` last."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_samples: Callable[[np.ndarray], None],
        on_error: Callable[[Exception], None],
        on_done: Callable[[], None],
        max_pending_bytes: int = 8 << 20,
    ) -> None:
        self.loop = loop
        self.on_samples = on_samples
        self.on_error = on_error
        self.on_done = on_done
        self.stream = ChunkStream(max_pending_bytes)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="live-audio-decoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self.stream.feed(data)

    def end(self) -> None:
        """No more bytes: the decoder finishes what it has, then calls on_done."""
        self.stream.end()

    def stop(self) -> None:
        """Gives up (the stream was cancelled): the thread ends at its next read or frame."""
        self._stopped = True
        self.stream.end()

    def _deliver(self, callback: Callable[..., None], *args: object) -> None:
        if not self._stopped and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        import av

        try:
            with av.open(self.stream, mode="r") as container:
                if not container.streams.audio:
                    raise InvalidInput("the encoded audio has no audio track")
                resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                for frame in container.decode(container.streams.audio[0]):
                    if self._stopped:
                        return
                    for resampled in resampler.resample(frame):
                        self._deliver(self.on_samples, resampled.to_ndarray().reshape(-1).astype(np.int16))
                for resampled in resampler.resample(None):
                    self._deliver(self.on_samples, resampled.to_ndarray().reshape(-1).astype(np.int16))
        except InvalidInput as exc:
            self._deliver(self.on_error, exc)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            self._deliver(self.on_error, InvalidInput(f"the encoded audio could not be decoded: {exc}"))
        finally:
            self._deliver(self.on_done)
