"""A real browser for the console's tests: Debian's chromium driven through chromium-driver (Selenium), headless,
with fake media devices that the tests make themselves: a camera that films skimage's astronaut (a .y4m file) and
a microphone that says an espeak-ng sentence (a .wav file). scripts/setup.sh --dev installs both packages.

    camera="fake"    the fake devices, permission granted as if the user had clicked "Allow";
    camera="denied"  the fake devices, but the user refused the camera and the microphone;
    camera="absent"  no devices at all (this machine has none), permission granted."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import cv2
import numpy as np

from tests.audio_media import espeak
from tests.tools import require_module, require_tool
from tests.video_media import astronaut_bgr

T = TypeVar("T")
Camera = Literal["fake", "denied", "absent"]
INSTALL = "scripts/setup.sh --dev installs chromium and chromium-driver"
LAPTOP = (1280, 800)
PHONE = (390, 844)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """Frames (BGR) as an uncompressed YUV4MPEG2 file (4:2:0), the format chromium's fake camera plays, looped."""
    height, width = frames[0].shape[:2]
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def astronaut_camera(path: Path, seconds: float = 2.0, fps: int = 15) -> Path:
    """640x480 frames of the astronaut's face (public domain, in scikit-image) swaying slowly on a grey wall."""
    face = astronaut_bgr(300)
    frames = []
    for index in range(int(seconds * fps)):
        frame = np.full((480, 640, 3), 185, np.uint8)
        x = 170 + int(20 * np.sin(2 * np.pi * index / (seconds * fps)))
        frame[90:390, x : x + 300] = face
        frames.append(frame)
    return write_y4m(path, frames, fps)


def spoken_microphone(path: Path, text: str) -> Path:
    path.write_bytes(espeak(text, words_per_minute=140))
    return path


def chromium(
    work: Path,
    camera: Camera = "fake",
    size: tuple[int, int] = LAPTOP,
    video: Path | None = None,
    audio: Path | None = None,
) -> Any:
    """A headless chromium (a selenium WebDriver) with the given camera situation and window size."""
    binary = require_tool("chromium", INSTALL)
    driver_path = require_tool("chromedriver", INSTALL)
    webdriver = require_module("selenium.webdriver", "the dev extra installs selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        f"--window-size={size[0]},{size[1]}",
        f"--user-data-dir={work / f'profile-{camera}-{size[0]}'}",
    ):
        options.add_argument(flag)
    if camera in ("fake", "denied"):
        options.add_argument("--use-fake-device-for-media-stream")
        if video is not None:
            options.add_argument(f"--use-file-for-fake-video-capture={video}")
        if audio is not None:
            options.add_argument(f"--use-file-for-fake-audio-capture={audio}")
    if camera == "denied":
        # What a user who clicked "Block" leaves behind: the site may not use the camera or the microphone.
        options.add_experimental_option(
            "prefs",
            {
                "profile.default_content_setting_values.media_stream_camera": 2,
                "profile.default_content_setting_values.media_stream_mic": 2,
            },
        )
    else:
        options.add_argument("--use-fake-ui-for-media-stream")  # "Allow", without a prompt
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(work / f"chromedriver-{camera}.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    if size[0] < 500:
        # A window cannot be narrower than 500 px; a phone's viewport is emulated instead, as DevTools does.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 2, "mobile": True},
        )
    return driver


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str, driver: Any = None) -> T:
    """Polls until condition() returns something truthy; on time-out fails with `what` and the page's console log."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # an element not there yet, a stale one
            last_error = exc
        time.sleep(0.1)
    log = ""
    if driver is not None:
        entries = driver.get_log("browser")
        log = "\n".join(f"  {e['level']}: {e['message']}" for e in entries[-20:])
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_error!r})\n{log}")
