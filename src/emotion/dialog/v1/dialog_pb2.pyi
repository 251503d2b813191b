from emotion.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PersonaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERSONA_KIND_UNSPECIFIED: _ClassVar[PersonaKind]
    PERSONA_KIND_DAILY_CHAT: _ClassVar[PersonaKind]
    PERSONA_KIND_COUNSELLING: _ClassVar[PersonaKind]
    PERSONA_KIND_MOCK_INTERVIEW: _ClassVar[PersonaKind]
    PERSONA_KIND_DEBATE: _ClassVar[PersonaKind]
    PERSONA_KIND_CUSTOM: _ClassVar[PersonaKind]

class EmotionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMOTION_SOURCE_UNSPECIFIED: _ClassVar[EmotionSource]
    EMOTION_SOURCE_REQUEST: _ClassVar[EmotionSource]
    EMOTION_SOURCE_TEXT_SERVICE: _ClassVar[EmotionSource]
PERSONA_KIND_UNSPECIFIED: PersonaKind
PERSONA_KIND_DAILY_CHAT: PersonaKind
PERSONA_KIND_COUNSELLING: PersonaKind
PERSONA_KIND_MOCK_INTERVIEW: PersonaKind
PERSONA_KIND_DEBATE: PersonaKind
PERSONA_KIND_CUSTOM: PersonaKind
EMOTION_SOURCE_UNSPECIFIED: EmotionSource
EMOTION_SOURCE_REQUEST: EmotionSource
EMOTION_SOURCE_TEXT_SERVICE: EmotionSource

class Persona(_message.Message):
    __slots__ = ("kind", "custom_description")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    kind: PersonaKind
    custom_description: str
    def __init__(self, kind: _Optional[_Union[PersonaKind, str]] = ..., custom_description: _Optional[str] = ...) -> None: ...

class EmotionContext(_message.Message):
    __slots__ = ("fused", "modalities")
    FUSED_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    fused: _common_pb2.FusedEmotion
    modalities: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModalityResult]
    def __init__(self, fused: _Optional[_Union[_common_pb2.FusedEmotion, _Mapping]] = ..., modalities: _Optional[_Iterable[_Union[_common_pb2.ModalityResult, _Mapping]]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("session_id", "message", "persona", "emotion")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    message: str
    persona: Persona
    emotion: EmotionContext
    def __init__(self, session_id: _Optional[str] = ..., message: _Optional[str] = ..., persona: _Optional[_Union[Persona, _Mapping]] = ..., emotion: _Optional[_Union[EmotionContext, _Mapping]] = ...) -> None: ...

class ReplyInfo(_message.Message):
    __slots__ = ("reply", "fallback", "fallback_reason", "history_available", "history_turns", "model", "prompt_tokens", "completion_tokens", "latency_ms", "emotion", "emotion_source")
    REPLY_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TURNS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    EMOTION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    reply: str
    fallback: bool
    fallback_reason: str
    history_available: bool
    history_turns: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    emotion: EmotionContext
    emotion_source: EmotionSource
    def __init__(self, reply: _Optional[str] = ..., fallback: _Optional[bool] = ..., fallback_reason: _Optional[str] = ..., history_available: _Optional[bool] = ..., history_turns: _Optional[int] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., latency_ms: _Optional[float] = ..., emotion: _Optional[_Union[EmotionContext, _Mapping]] = ..., emotion_source: _Optional[_Union[EmotionSource, str]] = ...) -> None: ...

class ChatChunk(_message.Message):
    __slots__ = ("delta", "done")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    delta: str
    done: ReplyInfo
    def __init__(self, delta: _Optional[str] = ..., done: _Optional[_Union[ReplyInfo, _Mapping]] = ...) -> None: ...

class GreetingRequest(_message.Message):
    __slots__ = ("session_id", "persona")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    persona: Persona
    def __init__(self, session_id: _Optional[str] = ..., persona: _Optional[_Union[Persona, _Mapping]] = ...) -> None: ...

class GreetingResponse(_message.Message):
    __slots__ = ("text", "info")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    text: str
    info: ReplyInfo
    def __init__(self, text: _Optional[str] = ..., info: _Optional[_Union[ReplyInfo, _Mapping]] = ...) -> None: ...

class ModalityClue(_message.Message):
    __slots__ = ("modality", "description", "distribution")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    description: str
    distribution: _common_pb2.EmotionDistribution
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., description: _Optional[str] = ..., distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("clues",)
    CLUES_FIELD_NUMBER: _ClassVar[int]
    clues: _containers.RepeatedCompositeFieldContainer[ModalityClue]
    def __init__(self, clues: _Optional[_Iterable[_Union[ModalityClue, _Mapping]]] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("analysis", "info")
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    analysis: str
    info: ReplyInfo
    def __init__(self, analysis: _Optional[str] = ..., info: _Optional[_Union[ReplyInfo, _Mapping]] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("role", "text", "emotion", "time")
    class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROLE_UNSPECIFIED: _ClassVar[Turn.Role]
        ROLE_USER: _ClassVar[Turn.Role]
        ROLE_ASSISTANT: _ClassVar[Turn.Role]
    ROLE_UNSPECIFIED: Turn.Role
    ROLE_USER: Turn.Role
    ROLE_ASSISTANT: Turn.Role
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    role: Turn.Role
    text: str
    emotion: _common_pb2.FusedEmotion
    time: float
    def __init__(self, role: _Optional[_Union[Turn.Role, str]] = ..., text: _Optional[str] = ..., emotion: _Optional[_Union[_common_pb2.FusedEmotion, _Mapping]] = ..., time: _Optional[float] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("turns",)
    TURNS_FIELD_NUMBER: _ClassVar[int]
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...

class ClearHistoryRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ClearHistoryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
