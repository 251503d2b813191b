from emotion.audio.v1 import audio_pb2 as _audio_pb2
from emotion.common.v1 import common_pb2 as _common_pb2
from emotion.text.v1 import text_pb2 as _text_pb2
from emotion.vision.v1 import vision_pb2 as _vision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM16: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_CONTAINER: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_PCM16: AudioEncoding
AUDIO_ENCODING_CONTAINER: AudioEncoding

class FuseRequest(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModalityResult]
    def __init__(self, results: _Optional[_Iterable[_Union[_common_pb2.ModalityResult, _Mapping]]] = ...) -> None: ...

class FuseResponse(_message.Message):
    __slots__ = ("fused",)
    FUSED_FIELD_NUMBER: _ClassVar[int]
    fused: _common_pb2.FusedEmotion
    def __init__(self, fused: _Optional[_Union[_common_pb2.FusedEmotion, _Mapping]] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("image", "video", "audio", "text", "transcript_as_text", "speaker", "context")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_AS_TEXT_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    video: bytes
    audio: bytes
    text: str
    transcript_as_text: bool
    speaker: str
    context: _containers.RepeatedCompositeFieldContainer[_text_pb2.ConversationTurn]
    def __init__(self, image: _Optional[bytes] = ..., video: _Optional[bytes] = ..., audio: _Optional[bytes] = ..., text: _Optional[str] = ..., transcript_as_text: _Optional[bool] = ..., speaker: _Optional[str] = ..., context: _Optional[_Iterable[_Union[_text_pb2.ConversationTurn, _Mapping]]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("fused", "modalities", "image", "video", "audio", "text", "text_from_transcript", "latency_ms")
    FUSED_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FROM_TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    fused: _common_pb2.FusedEmotion
    modalities: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModalityResult]
    image: _vision_pb2.AnalyzeImageResponse
    video: _vision_pb2.AnalyzeVideoResponse
    audio: _audio_pb2.AnalyzeAudioResponse
    text: _text_pb2.AnalyzeTextResponse
    text_from_transcript: bool
    latency_ms: float
    def __init__(self, fused: _Optional[_Union[_common_pb2.FusedEmotion, _Mapping]] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.ModalityResult, _Mapping]]] = ..., image: _Optional[_Union[_vision_pb2.AnalyzeImageResponse, _Mapping]] = ..., video: _Optional[_Union[_vision_pb2.AnalyzeVideoResponse, _Mapping]] = ..., audio: _Optional[_Union[_audio_pb2.AnalyzeAudioResponse, _Mapping]] = ..., text: _Optional[_Union[_text_pb2.AnalyzeTextResponse, _Mapping]] = ..., text_from_transcript: _Optional[bool] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("start", "frame", "audio", "text", "settings", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    frame: StreamFrame
    audio: StreamAudio
    text: StreamText
    settings: StreamSettings
    end: StreamEnd
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., frame: _Optional[_Union[StreamFrame, _Mapping]] = ..., audio: _Optional[_Union[StreamAudio, _Mapping]] = ..., text: _Optional[_Union[StreamText, _Mapping]] = ..., settings: _Optional[_Union[StreamSettings, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("audio_encoding", "sample_rate_hz", "channels", "settings")
    AUDIO_ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    audio_encoding: AudioEncoding
    sample_rate_hz: int
    channels: int
    settings: StreamSettings
    def __init__(self, audio_encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., settings: _Optional[_Union[StreamSettings, _Mapping]] = ...) -> None: ...

class StreamSettings(_message.Message):
    __slots__ = ("transcribe", "smoothing_s", "speaker")
    TRANSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_S_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    transcribe: bool
    smoothing_s: float
    speaker: str
    def __init__(self, transcribe: _Optional[bool] = ..., smoothing_s: _Optional[float] = ..., speaker: _Optional[str] = ...) -> None: ...

class StreamFrame(_message.Message):
    __slots__ = ("encoded", "raw", "timestamp_s")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: _vision_pb2.RawImage
    timestamp_s: float
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[_vision_pb2.RawImage, _Mapping]] = ..., timestamp_s: _Optional[float] = ...) -> None: ...

class StreamAudio(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class StreamText(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("time_s", "started", "faces", "speech", "text", "state", "change", "stats", "error", "transcript")
    TIME_S_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    time_s: float
    started: StreamStarted
    faces: StreamFaces
    speech: StreamSpeech
    text: StreamTextResult
    state: StreamState
    change: StreamChange
    stats: StreamStats
    error: StreamItemError
    transcript: StreamTranscript
    def __init__(self, time_s: _Optional[float] = ..., started: _Optional[_Union[StreamStarted, _Mapping]] = ..., faces: _Optional[_Union[StreamFaces, _Mapping]] = ..., speech: _Optional[_Union[StreamSpeech, _Mapping]] = ..., text: _Optional[_Union[StreamTextResult, _Mapping]] = ..., state: _Optional[_Union[StreamState, _Mapping]] = ..., change: _Optional[_Union[StreamChange, _Mapping]] = ..., stats: _Optional[_Union[StreamStats, _Mapping]] = ..., error: _Optional[_Union[StreamItemError, _Mapping]] = ..., transcript: _Optional[_Union[StreamTranscript, _Mapping]] = ...) -> None: ...

class StreamStarted(_message.Message):
    __slots__ = ("transcribe", "smoothing_s", "window_s", "hop_s", "max_duration_s", "max_bytes", "max_fps")
    TRANSCRIBE_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_S_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    HOP_S_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FPS_FIELD_NUMBER: _ClassVar[int]
    transcribe: bool
    smoothing_s: float
    window_s: float
    hop_s: float
    max_duration_s: float
    max_bytes: int
    max_fps: int
    def __init__(self, transcribe: _Optional[bool] = ..., smoothing_s: _Optional[float] = ..., window_s: _Optional[float] = ..., hop_s: _Optional[float] = ..., max_duration_s: _Optional[float] = ..., max_bytes: _Optional[int] = ..., max_fps: _Optional[int] = ...) -> None: ...

class StreamFaces(_message.Message):
    __slots__ = ("frame_index", "timestamp_s", "faces", "latency_ms")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    timestamp_s: float
    faces: _containers.RepeatedCompositeFieldContainer[_vision_pb2.Face]
    latency_ms: float
    def __init__(self, frame_index: _Optional[int] = ..., timestamp_s: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[_vision_pb2.Face, _Mapping]]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class StreamSpeech(_message.Message):
    __slots__ = ("start_s", "end_s", "speech_detected", "distribution", "reliability", "latency_ms")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    SPEECH_DETECTED_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    speech_detected: bool
    distribution: _common_pb2.EmotionDistribution
    reliability: float
    latency_ms: float
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., speech_detected: _Optional[bool] = ..., distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., reliability: _Optional[float] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class StreamTranscript(_message.Message):
    __slots__ = ("start_s", "end_s", "text", "final", "latency_ms")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    text: str
    final: bool
    latency_ms: float
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., text: _Optional[str] = ..., final: _Optional[bool] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class StreamTextResult(_message.Message):
    __slots__ = ("text", "from_transcript", "result")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FROM_TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    text: str
    from_transcript: bool
    result: _text_pb2.AnalyzeTextResponse
    def __init__(self, text: _Optional[str] = ..., from_transcript: _Optional[bool] = ..., result: _Optional[_Union[_text_pb2.AnalyzeTextResponse, _Mapping]] = ...) -> None: ...

class StreamState(_message.Message):
    __slots__ = ("fused", "modalities")
    FUSED_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    fused: _common_pb2.FusedEmotion
    modalities: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModalityResult]
    def __init__(self, fused: _Optional[_Union[_common_pb2.FusedEmotion, _Mapping]] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.ModalityResult, _Mapping]]] = ...) -> None: ...

class StreamChange(_message.Message):
    __slots__ = ("previous", "current", "probability")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    previous: _common_pb2.Emotion
    current: _common_pb2.Emotion
    probability: float
    def __init__(self, previous: _Optional[_Union[_common_pb2.Emotion, str]] = ..., current: _Optional[_Union[_common_pb2.Emotion, str]] = ..., probability: _Optional[float] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("frames_received", "frames_analysed", "frames_dropped", "frames_failed", "analysed_fps", "audio_received_s", "audio_windows_analysed", "audio_windows_skipped", "bytes_received", "events_dropped")
    FRAMES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_ANALYSED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FAILED_FIELD_NUMBER: _ClassVar[int]
    ANALYSED_FPS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_RECEIVED_S_FIELD_NUMBER: _ClassVar[int]
    AUDIO_WINDOWS_ANALYSED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_WINDOWS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    frames_received: int
    frames_analysed: int
    frames_dropped: int
    frames_failed: int
    analysed_fps: float
    audio_received_s: float
    audio_windows_analysed: int
    audio_windows_skipped: int
    bytes_received: int
    events_dropped: int
    def __init__(self, frames_received: _Optional[int] = ..., frames_analysed: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., frames_failed: _Optional[int] = ..., analysed_fps: _Optional[float] = ..., audio_received_s: _Optional[float] = ..., audio_windows_analysed: _Optional[int] = ..., audio_windows_skipped: _Optional[int] = ..., bytes_received: _Optional[int] = ..., events_dropped: _Optional[int] = ...) -> None: ...

class StreamItemError(_message.Message):
    __slots__ = ("item", "code", "message")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    item: str
    code: int
    message: str
    def __init__(self, item: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
