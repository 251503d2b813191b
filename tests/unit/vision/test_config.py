"""Vision settings: the detector choice and the AnalyzeImages limit are read from the environment and
wrong values fail at start."""

import pytest

from emomesh.config import ConfigError
from services.vision.config import VisionSettings


def test_defaults_are_blazeface_full_range_with_fallback_tiles() -> None:
    settings = VisionSettings.from_env({})
    assert (settings.detector, settings.detector_model, settings.detect_tiling) == (
        "blazeface",
        "blazeface_full_range",
        "fallback",
    )
    assert settings.detect_min_score == 0.5 and settings.max_images_per_request == 32


def test_the_detector_is_chosen_by_environment() -> None:
    settings = VisionSettings.from_env(
        {
            "EMOMESH_VISION_DETECTOR": "haar",
            "EMOMESH_VISION_DETECTOR_MODEL": "blazeface_short_range",
            "EMOMESH_VISION_DETECT_TILING": "always",
            "EMOMESH_VISION_MAX_IMAGES_PER_REQUEST": "4",
        }
    )
    assert (settings.detector, settings.detector_model, settings.detect_tiling) == (
        "haar",
        "blazeface_short_range",
        "always",
    )
    assert settings.max_images_per_request == 4


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DETECTOR", "mtcnn", "expected one of blazeface, haar"),
        ("DETECT_TILING", "sometimes", "expected one of off, fallback, always"),
        ("MAX_IMAGES_PER_REQUEST", "0", "below the minimum 1"),
    ],
)
def test_wrong_values_fail_at_start(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VisionSettings.from_env({f"EMOMESH_VISION_{name}": value})
