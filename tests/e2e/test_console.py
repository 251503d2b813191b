"""The web console in a real browser (Debian's chromium, headless, tests/browser.py) against the whole embedded
stack with its gateway, as `emomesh up` starts it. The LLM is the small OpenAI-compatible test server, so
replies stream word by word; the camera films skimage's astronaut and the microphone says an espeak-ng sentence.

With EMOMESH_CONSOLE_SCREENSHOTS=DIR the tests also save what the page looks like at each step into DIR
(scripts/console_screenshots.sh does that for docs/console.md)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emomesh import cli
from emomesh.procs import free_port, wait_until
from emomesh.stack import GATEWAY, ServiceProcess, Stack, StackConfig
from tests.browser import LAPTOP, PHONE, Camera, astronaut_camera, chromium, spoken_microphone, wait_for
from tests.integration.openai_server import OpenAIStub

pytestmark = pytest.mark.e2e

SENTENCE = "I just got the job. I am so happy, this is the best day of my life."
REPLY = "That is wonderful news, congratulations! You must be thrilled. What is the job?"
SCREENSHOTS = os.environ.get("EMOMESH_CONSOLE_SCREENSHOTS", "")


def screenshot(driver: Any, name: str) -> None:
    """The whole page (below the fold too) as a PNG in EMOMESH_CONSOLE_SCREENSHOTS, when that is set."""
    if not SCREENSHOTS:
        return
    time.sleep(1.0)  # the theme colour fades over 0.8 s (console.css): show it, not a blend
    width, height = driver.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight];"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
    )
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    (Path(SCREENSHOTS) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAIStub]:
    # Slow enough that a reply visibly streams in (about 0.1 s a word).
    stub = OpenAIStub(reply=REPLY, slow_repeats=1, slow_delay_s=0.1).start()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, llm: OpenAIStub) -> Iterator[Stack]:
    config = StackConfig.ephemeral(tmp_path_factory.mktemp("console-stack"))
    config.extra_env = {
        "EMOMESH_DIALOG_LLM_API_KEY": "sk-console-test-0000",
        "EMOMESH_DIALOG_LLM_BASE_URL": llm.base_url,
        "EMOMESH_DIALOG_LLM_MAX_RETRIES": "0",
    }
    with Stack(config) as running:
        yield running


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("media")
    return astronaut_camera(work / "astronaut.y4m"), spoken_microphone(work / "speech.wav", SENTENCE)


@pytest.fixture(scope="module")
def console_url(stack: Stack) -> str:
    assert stack.console_url is not None
    return stack.console_url


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, media: tuple[Path, Path], console_url: str) -> Iterator[Any]:
    """One laptop-sized page for the tests of a working session, in order (as a person would use it)."""
    video, audio = media
    driver = chromium(tmp_path_factory.mktemp("browser"), "fake", LAPTOP, video, audio)
    driver.get(console_url)
    yield driver
    driver.quit()


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


def attribute(driver: Any, selector: str, name: str) -> str | None:
    return js(driver, f"const e = document.querySelector({selector!r}); return e && e.getAttribute({name!r});")


def bubbles(driver: Any, kind: str) -> list[dict[str, Any]]:
    return list(
        js(
            driver,
            f"""return [...document.querySelectorAll('#chat-log .bubble.{kind}')].map(b => ({{
                text: b.textContent, streaming: b.dataset.streaming, fallback: b.dataset.fallback,
                kind: b.dataset.kind, emotion: b.dataset.emotion || null}}));""",
        )
    )


def reply_finished(driver: Any, assistant_bubbles_before: int) -> bool:
    """A new assistant bubble has appeared and finished streaming."""
    replies = bubbles(driver, "assistant")
    return len(replies) > assistant_bubbles_before and replies[-1]["streaming"] == "false"


def send_chat(driver: Any, message: str, what: str) -> dict[str, Any]:
    """Types a message, sends it, and waits for its reply to finish streaming; the reply's bubble."""
    before = len(bubbles(driver, "assistant"))
    driver.find_element("css selector", "#chat-input").send_keys(message)
    driver.find_element("css selector", "#chat-send").click()
    wait_for(lambda: reply_finished(driver, before), 60, what, driver)
    return bubbles(driver, "assistant")[-1]


def shown_message(driver: Any, selector: str) -> str | None:
    """The text of a message element while it is shown (#camera-message, #mic-message)."""
    return js(driver, f"const m = document.querySelector({selector!r}); return m.hidden ? null : m.textContent")


def test_the_page_loads_with_the_stack_up(page: Any) -> None:
    assert page.title
    wait_for(lambda: attribute(page, "#status-banner", "data-ready") == "true", 20, "the services to be ready", page)
    assert js(page, "return document.querySelector('#status-banner').hidden") is True
    assert js(page, "return window.emomeshConsole.sessionId")
    # the first greeting (daily chat) comes with the page
    greeting = wait_for(
        lambda: [b for b in bubbles(page, "assistant") if b["text"].strip()], 30, "the first greeting", page
    )[0]
    assert greeting["kind"] == "greeting"


def test_a_face_box_appears_from_the_live_stream(page: Any) -> None:
    wait_for(lambda: int(attribute(page, "#overlay", "data-face-count") or 0) >= 1, 40, "a face box", page)
    assert attribute(page, "#overlay", "data-source") == "stream"
    assert js(page, "return window.emomeshConsole.facesSeen") >= 1
    # the astronaut smiles: the live fused state says so
    wait_for(lambda: attribute(page, "#live-fused", "data-emotion"), 20, "the live fused emotion", page)
    assert attribute(page, "#live-fused", "data-emotion") == "happy"
    assert js(page, "return document.querySelector('#camera-message').hidden") is True
    screenshot(page, "console-laptop-live")


def test_push_to_talk_yields_a_fused_emotion_and_a_reply(page: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    replies_before = len(bubbles(page, "assistant"))
    button = page.find_element("css selector", "#ptt")
    ActionChains(page).click_and_hold(button).perform()
    wait_for(lambda: attribute(page, "#ptt", "data-state") == "recording", 10, "recording to start", page)
    ActionChains(page).pause(4.0).release(button).perform()
    emotion = wait_for(lambda: attribute(page, "#fused-result", "data-emotion"), 60, "the fused emotion", page)
    assert emotion in {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert 0.0 < float(attribute(page, "#fused-result", "data-confidence") or 0) <= 1.0
    analysis = js(page, "return window.emomeshConsole.lastAnalysis")
    statuses = {m["modality"]: m["status"] for m in analysis["modalities"]}
    assert statuses["MODALITY_VISION"] == "MODALITY_STATUS_OK"  # the camera's frame went with the voice
    assert statuses["MODALITY_AUDIO"] == "MODALITY_STATUS_OK"
    transcript = js(page, "return document.querySelector('#transcript').textContent")
    assert any(word in transcript.lower() for word in ("job", "happy", "best", "day")), transcript
    # the words go on to the chat, tagged with the fused emotion, and get a reply
    user = wait_for(lambda: [b for b in bubbles(page, "user") if b["emotion"]], 20, "the tagged user bubble", page)
    assert user[-1]["emotion"] == emotion
    wait_for(lambda: reply_finished(page, replies_before), 60, "the reply to the spoken words", page)
    screenshot(page, "console-laptop-push-to-talk")


def test_a_persona_switch_yields_a_greeting(page: Any) -> None:
    def greetings() -> list[str]:
        return [b["text"].strip() for b in bubbles(page, "assistant") if b["kind"] == "greeting"]

    before = len(greetings())
    page.find_element("css selector", '.persona[data-kind="PERSONA_KIND_MOCK_INTERVIEW"]').click()
    wait_for(lambda: len(greetings()) > before and greetings()[-1], 30, "the interview greeting", page)
    active = js(page, "return document.querySelector('.persona.active').dataset.kind")
    assert active == "PERSONA_KIND_MOCK_INTERVIEW"
    assert js(page, "return window.emomeshConsole.lastGreeting")


def test_a_chat_reply_streams_in(page: Any, llm: OpenAIStub) -> None:
    # Every text the newest assistant bubble shows, as the page changes it.
    js(
        page,
        """window.__seen = [];
        new MutationObserver(() => {
          const all = document.querySelectorAll('#chat-log .bubble.assistant');
          const last = all[all.length - 1];
          if (last && last.dataset.streaming === 'true') window.__seen.push(last.textContent);
        }).observe(document.querySelector('#chat-log'), {subtree: true, childList: true, characterData: true,
                                                          attributes: true});""",
    )
    reply = send_chat(page, "I finally finished the project I was worried about", "the streamed reply")
    assert REPLY in reply["text"]
    assert reply["fallback"] == "false"
    seen = js(page, "return window.__seen")
    partial = {text for text in seen if REPLY not in text}
    assert len(partial) >= 3, f"the reply arrived in {len(partial)} steps: {seen}"
    # the typed message is tagged with the emotion the text service read in it
    assert bubbles(page, "user")[-1]["emotion"]
    screenshot(page, "console-laptop-chat")


def test_an_offline_reply_is_marked_as_a_fallback(page: Any, llm: OpenAIStub) -> None:
    llm.fail_status = 503
    try:
        reply = send_chat(page, "Are you there?", "the fallback reply")
    finally:
        llm.fail_status = None
    assert reply["fallback"] == "true"
    assert "offline" in reply["text"].lower()


def test_live_voice_streams_the_microphone_into_the_live_stream(page: Any) -> None:
    """The toggle restarts the live stream with the microphone's encoded audio (WebM/Opus as MediaRecorder
    makes it): the voice lane's windows and words arrive while the face boxes go on; off again, it stops."""
    faces_before = js(page, "return window.emomeshConsole.facesSeen")
    page.find_element("css selector", "#live-voice").click()
    emotion = wait_for(lambda: attribute(page, "#live-voice-line", "data-emotion"), 60, "a live speech window", page)
    assert emotion in {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    words = wait_for(
        lambda: js(page, "return document.querySelector('#live-words').textContent.trim()"), 90, "live words", page
    )
    assert any(word in words.lower() for word in ("job", "happy", "best", "day", "life")), words
    assert js(page, "return window.emomeshConsole.facesSeen") > faces_before  # the face lane went on
    assert attribute(page, "#overlay", "data-source") == "stream"
    screenshot(page, "console-laptop-live-voice")
    page.find_element("css selector", "#live-voice").click()
    wait_for(lambda: js(page, "return document.querySelector('#live-voice-line').hidden"), 10, "voice off", page)
    faces_after = js(page, "return window.emomeshConsole.facesSeen")
    wait_for(
        lambda: js(page, "return window.emomeshConsole.facesSeen") > faces_after, 20, "faces after voice off", page
    )


def test_a_restarted_stream_goes_on_when_the_old_socket_closes_after_the_new_one_opened(page: Any) -> None:
    """Turning live voice on or off replaces the stream. The old socket's close handshake is a round trip,
    like the new one's opening, so under load its close event can come second; ending the old stream then
    must not stop the new one's frames (it did: one frame timer for the page, cleared by the old socket)."""
    wait_for(lambda: attribute(page, "#overlay", "data-source") == "stream", 40, "faces from the stream", page)
    # Hold every close for 1.5 s, so the replaced socket closes after its successor has opened.
    js(
        page,
        """const close = WebSocket.prototype.close;
        window.restoreWebSocketClose = () => { WebSocket.prototype.close = close; };
        WebSocket.prototype.close = function (...args) { setTimeout(() => close.apply(this, args), 1500); };""",
    )
    try:
        js(page, "restartStream()")
        wait_for(lambda: js(page, "return live.socket?.readyState === WebSocket.OPEN"), 20, "the new stream", page)
        time.sleep(2.5)  # the old socket's close has now come
        faces_after = js(page, "return window.emomeshConsole.facesSeen")
        wait_for(lambda: js(page, "return window.emomeshConsole.facesSeen") > faces_after, 20, "faces, restarted", page)
        assert attribute(page, "#overlay", "data-source") == "stream"
    finally:
        js(page, "window.restoreWebSocketClose()")


@pytest.mark.parametrize(
    ("camera", "expected", "microphone"),
    [("denied", "camera access was denied", "microphone access was denied"), ("absent", "no camera", "no microphone")],
)
def test_a_denied_or_missing_camera_and_microphone_show_their_messages(
    tmp_path: Path, media: tuple[Path, Path], console_url: str, camera: Camera, expected: str, microphone: str
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    video, audio = media
    driver = chromium(tmp_path, camera, LAPTOP, video, audio)
    try:
        driver.get(console_url)
        message = wait_for(lambda: shown_message(driver, "#camera-message"), 20, "the camera message", driver)
        assert expected in message.lower()
        # the rest of the page still works: the greeting comes
        wait_for(lambda: [b for b in bubbles(driver, "assistant") if b["text"].strip()], 30, "the greeting", driver)
        # push-to-talk asks for the microphone and says why it cannot record
        button = driver.find_element("css selector", "#ptt")
        ActionChains(driver).click_and_hold(button).pause(0.5).release(button).perform()
        mic = wait_for(lambda: shown_message(driver, "#mic-message"), 20, "the microphone message", driver)
        assert microphone in mic.lower()
        assert attribute(driver, "#ptt", "data-state") == "idle"
        screenshot(driver, f"console-camera-{camera}")
    finally:
        driver.quit()


def test_the_page_fits_a_phone(tmp_path: Path, media: tuple[Path, Path], console_url: str) -> None:
    video, audio = media
    driver = chromium(tmp_path, "fake", PHONE, video, audio)
    try:
        driver.get(console_url)
        wait_for(lambda: int(attribute(driver, "#overlay", "data-face-count") or 0) >= 1, 40, "a face box", driver)
        width = js(driver, "return window.innerWidth")
        assert js(driver, "return document.documentElement.scrollWidth") <= width + 1  # no sideways scrolling
        for selector in ("#camera", "#ptt", "#chat-input", '.persona[data-kind="PERSONA_KIND_DEBATE"]'):
            box = js(driver, f"return document.querySelector({selector!r}).getBoundingClientRect().toJSON()")
            assert box["width"] > 0 and box["left"] >= 0 and box["right"] <= width + 1, (selector, box)
        screenshot(driver, "console-phone")
    finally:
        driver.quit()


def test_a_service_that_is_down_is_named_in_a_banner(tmp_path: Path, console_url: str, stack: Stack) -> None:
    """A second gateway whose dialog service is down (nothing listens at its address): the page loads and names
    what does not work, and the greeting says why it failed instead of hanging."""
    port = free_port()
    env = {
        **os.environ,
        "EMOMESH_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "EMOMESH_GATEWAY_METRICS_PORT": "0",
        "EMOMESH_GATEWAY_FUSION_ADDR": stack.config.address("fusion"),
        "EMOMESH_GATEWAY_VISION_ADDR": stack.config.address("vision"),
        "EMOMESH_GATEWAY_DIALOG_ADDR": f"127.0.0.1:{free_port()}",
        "EMOMESH_GATEWAY_CALL_TIMEOUT_S": "3",
    }
    gateway = ServiceProcess(GATEWAY, env, f"127.0.0.1:{port}", tmp_path / "gateway.log")
    gateway.start()
    driver = None
    try:
        wait_until(gateway.is_ready, 30, "the second gateway", gateway.process, gateway.log_path)
        driver = chromium(tmp_path, "absent", LAPTOP)
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: attribute(driver, "#status-banner", "data-ready") == "false", 20, "readiness", driver)
        banner = js(driver, "return document.querySelector('#status-banner').textContent")
        assert "dialog unavailable" in banner
        assert "fusion" not in banner  # fusion is up
        greeting = wait_for(
            lambda: [b for b in bubbles(driver, "assistant") if b["text"].strip()], 30, "the failed greeting", driver
        )
        assert "the dialog service is unavailable" in greeting[-1]["text"]
        assert "127.0.0.1" not in greeting[-1]["text"]  # the page is not told where the services run
        screenshot(driver, "console-dialog-down")
    finally:
        if driver is not None:
            driver.quit()
        gateway.stop()


def test_emomesh_health_checks_the_gateway_of_the_stack(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["health", "--stack", str(stack.config.state_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    statuses = {s["service"]: (s["address"], s["status"]) for s in report["services"]}
    assert statuses["gateway"] == (stack.config.address("gateway"), "SERVING")
    assert set(statuses) == {"vision", "audio", "text", "fusion", "dialog", "gateway"}
