"""Encoded audio in a live stream (AUDIO_ENCODING_CONTAINER): the chunks are the consecutive bytes of one
encoded stream, as a browser's MediaRecorder (WebM/Opus) or an encoder writing OGG, MP3, FLAC or WAV
produces them. They are decoded as they arrive, in a thread (PyAV blocks on its reads), into 16 kHz
mono PCM16 that the voice lane reads like any other audio.

The stream's task collects the decoded samples every few milliseconds (services/fusion/stream.py).
A container that needs to seek to be read (an MP4 whose index is at its end) cannot be streamed; its
decoding fails with the decoder's message, which ends the stream with INVALID_ARGUMENT."""

from __future__ import annotations

import io
import threading
from collections import deque

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
    """Decodes one encoded audio stream in a thread. The stream's task collects what it decoded with
    `drain()` (16 kHz mono int16 arrays, in order) and learns from `finished` and `error` that it is done;
    nothing crosses back from the thread but these (no callbacks into the event loop)."""

    def __init__(self, max_pending_bytes: int = 8 << 20) -> None:
        self.stream = ChunkStream(max_pending_bytes)
        self.error: InvalidInput | None = None
        self.finished = False
        self._stopped = False
        self._decoded: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="live-audio-decoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self.stream.feed(data)

    def end(self) -> None:
        """No more bytes: the decoder finishes what it has, then sets `finished`."""
        self.stream.end()

    def stop(self) -> None:
        """Gives up (the stream was cancelled): the thread ends at its next read or frame."""
        self._stopped = True
        self.stream.end()

    def drain(self) -> list[np.ndarray]:
        """The samples decoded since the last drain, oldest first."""
        with self._lock:
            decoded = list(self._decoded)
            self._decoded.clear()
        return decoded

    def _keep(self, samples: np.ndarray) -> None:
        with self._lock:
            self._decoded.append(samples.reshape(-1).astype(np.int16))

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
                        self._keep(resampled.to_ndarray())
                for resampled in resampler.resample(None):
                    self._keep(resampled.to_ndarray())
        except InvalidInput as exc:
            self.error = exc
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            self.error = InvalidInput(f"the encoded audio could not be decoded: {exc}")
        finally:
            self.finished = True
