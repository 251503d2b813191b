from emotion.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeTextRequest(_message.Message):
    __slots__ = ("text", "utf8", "language_hint", "speaker", "context")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UTF8_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    utf8: bytes
    language_hint: str
    speaker: str
    context: _containers.RepeatedCompositeFieldContainer[ConversationTurn]
    def __init__(self, text: _Optional[str] = ..., utf8: _Optional[bytes] = ..., language_hint: _Optional[str] = ..., speaker: _Optional[str] = ..., context: _Optional[_Iterable[_Union[ConversationTurn, _Mapping]]] = ...) -> None: ...

class ConversationTurn(_message.Message):
    __slots__ = ("speaker", "text")
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    speaker: str
    text: str
    def __init__(self, speaker: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class AnalyzeTextResponse(_message.Message):
    __slots__ = ("distribution", "language", "translated", "translated_text", "truncated", "tokens", "reliability", "note", "model", "latency_ms", "error", "dimensions", "context_tokens")
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_FIELD_NUMBER: _ClassVar[int]
    TRANSLATED_TEXT_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    distribution: _common_pb2.EmotionDistribution
    language: str
    translated: bool
    translated_text: str
    truncated: bool
    tokens: int
    reliability: float
    note: str
    model: _common_pb2.ModelInfo
    latency_ms: float
    error: _common_pb2.ItemError
    dimensions: _common_pb2.Dimensions
    context_tokens: int
    def __init__(self, distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., language: _Optional[str] = ..., translated: _Optional[bool] = ..., translated_text: _Optional[str] = ..., truncated: _Optional[bool] = ..., tokens: _Optional[int] = ..., reliability: _Optional[float] = ..., note: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ..., dimensions: _Optional[_Union[_common_pb2.Dimensions, _Mapping]] = ..., context_tokens: _Optional[int] = ...) -> None: ...

class AnalyzeTextsRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedCompositeFieldContainer[AnalyzeTextRequest]
    def __init__(self, texts: _Optional[_Iterable[_Union[AnalyzeTextRequest, _Mapping]]] = ...) -> None: ...

class AnalyzeTextsResponse(_message.Message):
    __slots__ = ("results", "latency_ms")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AnalyzeTextResponse]
    latency_ms: float
    def __init__(self, results: _Optional[_Iterable[_Union[AnalyzeTextResponse, _Mapping]]] = ..., latency_ms: _Optional[float] = ...) -> None: ...
