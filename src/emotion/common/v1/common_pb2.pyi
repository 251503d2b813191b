from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Emotion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMOTION_UNSPECIFIED: _ClassVar[Emotion]
    EMOTION_ANGRY: _ClassVar[Emotion]
    EMOTION_DISGUST: _ClassVar[Emotion]
    EMOTION_FEAR: _ClassVar[Emotion]
    EMOTION_HAPPY: _ClassVar[Emotion]
    EMOTION_SAD: _ClassVar[Emotion]
    EMOTION_SURPRISE: _ClassVar[Emotion]
    EMOTION_NEUTRAL: _ClassVar[Emotion]

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_VISION: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]

class Polarity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLARITY_UNSPECIFIED: _ClassVar[Polarity]
    POLARITY_NEGATIVE: _ClassVar[Polarity]
    POLARITY_NEUTRAL: _ClassVar[Polarity]
    POLARITY_POSITIVE: _ClassVar[Polarity]

class ModalityStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_STATUS_UNSPECIFIED: _ClassVar[ModalityStatus]
    MODALITY_STATUS_OK: _ClassVar[ModalityStatus]
    MODALITY_STATUS_MISSING: _ClassVar[ModalityStatus]
    MODALITY_STATUS_UNAVAILABLE: _ClassVar[ModalityStatus]
    MODALITY_STATUS_TIMED_OUT: _ClassVar[ModalityStatus]
    MODALITY_STATUS_LOW_CONFIDENCE: _ClassVar[ModalityStatus]
    MODALITY_STATUS_INVALID_INPUT: _ClassVar[ModalityStatus]
EMOTION_UNSPECIFIED: Emotion
EMOTION_ANGRY: Emotion
EMOTION_DISGUST: Emotion
EMOTION_FEAR: Emotion
EMOTION_HAPPY: Emotion
EMOTION_SAD: Emotion
EMOTION_SURPRISE: Emotion
EMOTION_NEUTRAL: Emotion
MODALITY_UNSPECIFIED: Modality
MODALITY_VISION: Modality
MODALITY_AUDIO: Modality
MODALITY_TEXT: Modality
POLARITY_UNSPECIFIED: Polarity
POLARITY_NEGATIVE: Polarity
POLARITY_NEUTRAL: Polarity
POLARITY_POSITIVE: Polarity
MODALITY_STATUS_UNSPECIFIED: ModalityStatus
MODALITY_STATUS_OK: ModalityStatus
MODALITY_STATUS_MISSING: ModalityStatus
MODALITY_STATUS_UNAVAILABLE: ModalityStatus
MODALITY_STATUS_TIMED_OUT: ModalityStatus
MODALITY_STATUS_LOW_CONFIDENCE: ModalityStatus
MODALITY_STATUS_INVALID_INPUT: ModalityStatus

class EmotionDistribution(_message.Message):
    __slots__ = ("probabilities", "top", "confidence")
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    top: Emotion
    confidence: float
    def __init__(self, probabilities: _Optional[_Iterable[float]] = ..., top: _Optional[_Union[Emotion, str]] = ..., confidence: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModalityResult(_message.Message):
    __slots__ = ("modality", "status", "distribution", "reliability", "model", "latency_ms", "detail")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    status: ModalityStatus
    distribution: EmotionDistribution
    reliability: float
    model: ModelInfo
    latency_ms: float
    detail: str
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., status: _Optional[_Union[ModalityStatus, str]] = ..., distribution: _Optional[_Union[EmotionDistribution, _Mapping]] = ..., reliability: _Optional[float] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class ModalityWeight(_message.Message):
    __slots__ = ("modality", "weight")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    weight: float
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., weight: _Optional[float] = ...) -> None: ...

class FusedEmotion(_message.Message):
    __slots__ = ("distribution", "weights", "missing", "polarity", "conflict", "conflicting", "conflict_detail")
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    POLARITY_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_DETAIL_FIELD_NUMBER: _ClassVar[int]
    distribution: EmotionDistribution
    weights: _containers.RepeatedCompositeFieldContainer[ModalityWeight]
    missing: _containers.RepeatedScalarFieldContainer[Modality]
    polarity: Polarity
    conflict: bool
    conflicting: _containers.RepeatedScalarFieldContainer[Modality]
    conflict_detail: str
    def __init__(self, distribution: _Optional[_Union[EmotionDistribution, _Mapping]] = ..., weights: _Optional[_Iterable[_Union[ModalityWeight, _Mapping]]] = ..., missing: _Optional[_Iterable[_Union[Modality, str]]] = ..., polarity: _Optional[_Union[Polarity, str]] = ..., conflict: _Optional[bool] = ..., conflicting: _Optional[_Iterable[_Union[Modality, str]]] = ..., conflict_detail: _Optional[str] = ...) -> None: ...

class Dimensions(_message.Message):
    __slots__ = ("valence", "arousal")
    VALENCE_FIELD_NUMBER: _ClassVar[int]
    AROUSAL_FIELD_NUMBER: _ClassVar[int]
    valence: float
    arousal: float
    def __init__(self, valence: _Optional[float] = ..., arousal: _Optional[float] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
