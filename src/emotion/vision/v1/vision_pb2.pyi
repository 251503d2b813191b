from emotion.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BoundingBox(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class FaceKeypoints(_message.Message):
    __slots__ = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
    RIGHT_EYE_FIELD_NUMBER: _ClassVar[int]
    LEFT_EYE_FIELD_NUMBER: _ClassVar[int]
    NOSE_TIP_FIELD_NUMBER: _ClassVar[int]
    MOUTH_FIELD_NUMBER: _ClassVar[int]
    RIGHT_EAR_FIELD_NUMBER: _ClassVar[int]
    LEFT_EAR_FIELD_NUMBER: _ClassVar[int]
    right_eye: Point
    left_eye: Point
    nose_tip: Point
    mouth: Point
    right_ear: Point
    left_ear: Point
    def __init__(self, right_eye: _Optional[_Union[Point, _Mapping]] = ..., left_eye: _Optional[_Union[Point, _Mapping]] = ..., nose_tip: _Optional[_Union[Point, _Mapping]] = ..., mouth: _Optional[_Union[Point, _Mapping]] = ..., right_ear: _Optional[_Union[Point, _Mapping]] = ..., left_ear: _Optional[_Union[Point, _Mapping]] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "distribution", "track_id", "keypoints", "detection_score")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    box: BoundingBox
    distribution: _common_pb2.EmotionDistribution
    track_id: int
    keypoints: FaceKeypoints
    detection_score: float
    def __init__(self, box: _Optional[_Union[BoundingBox, _Mapping]] = ..., distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., track_id: _Optional[int] = ..., keypoints: _Optional[_Union[FaceKeypoints, _Mapping]] = ..., detection_score: _Optional[float] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("pixels", "width", "height", "format")
    class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PIXEL_FORMAT_UNSPECIFIED: _ClassVar[RawImage.PixelFormat]
        PIXEL_FORMAT_RGB24: _ClassVar[RawImage.PixelFormat]
        PIXEL_FORMAT_BGR24: _ClassVar[RawImage.PixelFormat]
        PIXEL_FORMAT_GRAY8: _ClassVar[RawImage.PixelFormat]
    PIXEL_FORMAT_UNSPECIFIED: RawImage.PixelFormat
    PIXEL_FORMAT_RGB24: RawImage.PixelFormat
    PIXEL_FORMAT_BGR24: RawImage.PixelFormat
    PIXEL_FORMAT_GRAY8: RawImage.PixelFormat
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    pixels: bytes
    width: int
    height: int
    format: RawImage.PixelFormat
    def __init__(self, pixels: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., format: _Optional[_Union[RawImage.PixelFormat, str]] = ...) -> None: ...

class AnalyzeImageRequest(_message.Message):
    __slots__ = ("image", "raw", "max_faces", "whole_image_is_face")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    WHOLE_IMAGE_IS_FACE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    raw: RawImage
    max_faces: int
    whole_image_is_face: bool
    def __init__(self, image: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., max_faces: _Optional[int] = ..., whole_image_is_face: _Optional[bool] = ...) -> None: ...

class AnalyzeImageResponse(_message.Message):
    __slots__ = ("faces", "primary", "image_width", "image_height", "model", "latency_ms", "error")
    FACES_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    primary: _common_pb2.EmotionDistribution
    image_width: int
    image_height: int
    model: _common_pb2.ModelInfo
    latency_ms: float
    error: _common_pb2.ItemError
    def __init__(self, faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., primary: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.ItemError, _Mapping]] = ...) -> None: ...

class AnalyzeImagesRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[AnalyzeImageRequest]
    def __init__(self, images: _Optional[_Iterable[_Union[AnalyzeImageRequest, _Mapping]]] = ...) -> None: ...

class AnalyzeImagesResponse(_message.Message):
    __slots__ = ("results", "latency_ms")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AnalyzeImageResponse]
    latency_ms: float
    def __init__(self, results: _Optional[_Iterable[_Union[AnalyzeImageResponse, _Mapping]]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class FrameSequence(_message.Message):
    __slots__ = ("images", "fps")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    fps: float
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., fps: _Optional[float] = ...) -> None: ...

class AnalyzeVideoRequest(_message.Message):
    __slots__ = ("video", "frames", "uniform_frames", "every_nth_frame", "stride_seconds")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVERY_NTH_FRAME_FIELD_NUMBER: _ClassVar[int]
    STRIDE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    video: bytes
    frames: FrameSequence
    uniform_frames: int
    every_nth_frame: int
    stride_seconds: float
    def __init__(self, video: _Optional[bytes] = ..., frames: _Optional[_Union[FrameSequence, _Mapping]] = ..., uniform_frames: _Optional[int] = ..., every_nth_frame: _Optional[int] = ..., stride_seconds: _Optional[float] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("index", "timestamp_s", "faces")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    index: int
    timestamp_s: float
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    def __init__(self, index: _Optional[int] = ..., timestamp_s: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ...) -> None: ...

class FaceTrack(_message.Message):
    __slots__ = ("track_id", "distribution", "frames_seen")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SEEN_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    distribution: _common_pb2.EmotionDistribution
    frames_seen: int
    def __init__(self, track_id: _Optional[int] = ..., distribution: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., frames_seen: _Optional[int] = ...) -> None: ...

class AnalyzeVideoResponse(_message.Message):
    __slots__ = ("frames", "tracks", "aggregate", "frames_sampled", "frames_without_faces", "duration_s", "model", "latency_ms")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_WITHOUT_FACES_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[FrameResult]
    tracks: _containers.RepeatedCompositeFieldContainer[FaceTrack]
    aggregate: _common_pb2.EmotionDistribution
    frames_sampled: int
    frames_without_faces: int
    duration_s: float
    model: _common_pb2.ModelInfo
    latency_ms: float
    def __init__(self, frames: _Optional[_Iterable[_Union[FrameResult, _Mapping]]] = ..., tracks: _Optional[_Iterable[_Union[FaceTrack, _Mapping]]] = ..., aggregate: _Optional[_Union[_common_pb2.EmotionDistribution, _Mapping]] = ..., frames_sampled: _Optional[int] = ..., frames_without_faces: _Optional[int] = ..., duration_s: _Optional[float] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("data", "uniform_frames", "every_nth_frame", "stride_seconds")
    DATA_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    EVERY_NTH_FRAME_FIELD_NUMBER: _ClassVar[int]
    STRIDE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    uniform_frames: int
    every_nth_frame: int
    stride_seconds: float
    def __init__(self, data: _Optional[bytes] = ..., uniform_frames: _Optional[int] = ..., every_nth_frame: _Optional[int] = ..., stride_seconds: _Optional[float] = ...) -> None: ...
