from emotion.audio.v1 import audio_pb2 as _audio_pb2
from emotion.common.v1 import common_pb2 as _common_pb2
from emotion.text.v1 import text_pb2 as _text_pb2
from emotion.vision.v1 import vision_pb2 as _vision_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
