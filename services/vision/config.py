"""Vision service settings, read once from the environment (EMOMESH_VISION_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from emomesh.config import ConfigError, Env, MiB, ServerSettings, TritonSettings
from emomesh.ports import service_port

DEFAULT_PORT = service_port("vision")
# The detectors EMOMESH_VISION_DETECTOR selects (services/vision/faces.py, blazeface.py).
DETECTORS = ("blazeface", "haar")
# BlazeFace's tilings (blazeface.BlazeFaceDetector).
TILINGS = ("off", "fallback", "always")


@dataclass(frozen=True)
class VisionSettings:
    server: ServerSettings
    triton: TritonSettings
    # Triton model that classifies faces; its input size is read from Triton, so a 48x48 model
    # (DeepFace) and the 64x64 default are interchangeable.
    model_name: str
    # Face detector: `blazeface` (served by Triton as detector_model) or `haar` (OpenCV, in-process).
    detector: str
    # Triton model of the BlazeFace detector: blazeface_full_range (photos, faces down to ~1/10 of the
    # image side) or blazeface_short_range (selfie distance, 3x cheaper).
    detector_model: str
    # BlazeFace: the face probability an anchor needs (MediaPipe's 0.5), and when to look at tiles
    # for faces too small for the whole-image pass (off | fallback | always; blazeface.py).
    detect_min_score: float
    detect_tiling: str
    max_image_bytes: int
    # Images of one AnalyzeImages call: bounds the memory and the time of one call.
    max_images_per_request: int
    max_pixels: int
    max_faces: int
    min_face_px: int
    # Fraction of the face box added on each side before cropping: the expression models were
    # trained on crops with some forehead and chin.
    face_margin: float
    # Images are shrunk to this longest side for detection only; the crop uses the full image.
    detect_max_side: int
    # Video: frames sampled per request (bounds faces sent to the model), frames decoded per request
    # (bounds CPU time: every frame up to the last sampled one is decoded), and the box overlap
    # that links a face to a track of the previous sampled frames.
    max_video_frames: int
    # Bytes of one AnalyzeVideoStream upload (spooled to a temporary file while it arrives).
    max_video_bytes: int
    max_decoded_frames: int
    track_min_iou: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VisionSettings:
        env = Env("EMOMESH_VISION_", environ)
        max_image_bytes = env.get_int("MAX_IMAGE_BYTES", 20 * MiB, minimum=1)
        detector = env.get_str("DETECTOR", "blazeface")
        if detector not in DETECTORS:
            raise ConfigError(f"EMOMESH_VISION_DETECTOR={detector!r}; expected one of {', '.join(DETECTORS)}")
        tiling = env.get_str("DETECT_TILING", "fallback")
        if tiling not in TILINGS:
            raise ConfigError(f"EMOMESH_VISION_DETECT_TILING={tiling!r}; expected one of {', '.join(TILINGS)}")
        return cls(
            # Messages just above the image limit (1 MiB for the other fields and AnalyzeImages'
            # framing): gRPC refuses a larger one from its length prefix, unread. Longer videos
            # than that come through AnalyzeVideoStream.
            server=ServerSettings.from_env(
                "vision", DEFAULT_PORT, environ, max_message_bytes=max_image_bytes + MiB, max_inflight_bytes=64 * MiB
            ),
            triton=TritonSettings.from_env(environ),
            model_name=env.get_str("MODEL", "fer_mini_xception_ft"),
            detector=detector,
            detector_model=env.get_str("DETECTOR_MODEL", "blazeface_full_range"),
            detect_min_score=env.get_float("DETECT_MIN_SCORE", 0.5, minimum=0.0),
            detect_tiling=tiling,
            max_image_bytes=max_image_bytes,
            max_images_per_request=env.get_int("MAX_IMAGES_PER_REQUEST", 32, minimum=1),
            max_pixels=env.get_int("MAX_PIXELS", 40_000_000, minimum=1),
            max_faces=env.get_int("MAX_FACES", 10, minimum=1),
            min_face_px=env.get_int("MIN_FACE_PX", 40, minimum=8),
            face_margin=env.get_float("FACE_MARGIN", 0.1, minimum=0.0),
            detect_max_side=env.get_int("DETECT_MAX_SIDE", 1280, minimum=64),
            max_video_frames=env.get_int("MAX_VIDEO_FRAMES", 256, minimum=1),
            max_video_bytes=env.get_int("MAX_VIDEO_BYTES", 2 * 1024**3, minimum=1),
            max_decoded_frames=env.get_int("MAX_DECODED_FRAMES", 54_000, minimum=1),
            track_min_iou=env.get_float("TRACK_MIN_IOU", 0.3, minimum=0.0),
        )
