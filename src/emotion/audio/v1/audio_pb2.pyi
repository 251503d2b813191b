from emotion.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeAudioRequest(_message.Message):
    __slots__ = ("audio", "transcribe")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIBE_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    transcribe: bool
    def __init__(self, audio: _Optional[bytes] = ..., transcribe: _Optional[bool] = ...) -> None: ...

class AudioWindow(_message.Message):
    __slots__ = ("start_s", "end_s", "distribution", "speech_detected")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SPEECH_DETECTED_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    distribution: _common_pb2.EmotionDistribution
    speech_detected: bool
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., speech_detected: _Optional[bool] = ...) -> None: ...

class TranscriptSegment(_message.Message):
    __slots__ = ("start_s", "end_s", "text", "avg_logprob", "no_speech_prob")
    START_S_FIELD_NUMBER: _ClassVar[int]
    END_S_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AVG_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_PROB_FIELD_NUMBER: _ClassVar[int]
    start_s: float
    end_s: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    def __init__(self, start_s: _Optional[float] = ..., end_s: _Optional[float] = ..., text: _Optional[str] = ..., avg_logprob: _Optional[float] = ..., no_speech_prob: _Optional[float] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "language", "segments", "model", "latency_ms", "language_probability", "avg_logprob", "no_speech_prob")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    AVG_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_PROB_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    segments: _containers.RepeatedCompositeFieldContainer[TranscriptSegment]
    model: _common_pb2.ModelInfo
    latency_ms: float
    language_probability: float
    avg_logprob: float
    no_speech_prob: float
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[TranscriptSegment, _Mapping]]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., language_probability: _Optional[float] = ..., avg_logprob: _Optional[float] = ..., no_speech_prob: _Optional[float] = ...) -> None: ...

class AnalyzeAudioResponse(_message.Message):
    __slots__ = ("distribution", "windows", "padded", "duration_s", "speech_detected", "reliability", "transcript", "source_sample_rate", "source_channels", "model", "latency_ms", "no_speech_reason")
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    PADDED_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SPEECH_DETECTED_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_REASON_FIELD_NUMBER: _ClassVar[int]
    distribution: _common_pb2.EmotionDistribution
    windows: _containers.RepeatedCompositeFieldContainer[AudioWindow]
    padded: bool
    duration_s: float
    speech_detected: bool
    reliability: float
    transcript: Transcript
    source_sample_rate: int
    source_channels: int
    model: _common_pb2.ModelInfo
    latency_ms: float
    no_speech_reason: str
    def __init__(self, distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., windows: _Optional[_Iterable[_Union[AudioWindow, _Mapping]]] = ..., padded: _Optional[bool] = ..., duration_s: _Optional[float] = ..., speech_detected: _Optional[bool] = ..., reliability: _Optional[float] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., source_sample_rate: _Optional[int] = ..., source_channels: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., no_speech_reason: _Optional[str] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("audio",)
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    def __init__(self, audio: _Optional[bytes] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("transcript",)
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    transcript: Transcript
    def __init__(self, transcript: _Optional[_Union[Transcript, _Mapping]] = ...) -> None: ...
