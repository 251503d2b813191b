"""The monitoring as deployed: a real Prometheus, with the committed rules, scraping the embedded stack
(real tritonserver, services and console gateway) after real requests, gRPC to the services and HTTP +
WebSocket through the gateway; every Grafana dashboard query and every recording rule must return data,
and every rule must evaluate without error."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import soundfile
import yaml

from emomesh.paths import PROJECT_ROOT
from emomesh.procs import free_port, stop_process, wait_until
from emomesh.stack import Stack, StackConfig
from emotion.audio.v1 import audio_pb2, audio_pb2_grpc
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.fusion.v1 import fusion_pb2, fusion_pb2_grpc
from emotion.text.v1 import text_pb2, text_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from services.vision.config import VisionSettings
from tests.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
DASHBOARD_DIR = PROJECT_ROOT / "deploy" / "grafana" / "provisioning" / "dashboards"
# Grafana's own variables, replaced as Grafana would for "All" and a window long enough to hold
# every request the test sends (the rules use 5m windows too).
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "5m", "$service": ".*", "$model": ".*"}
# How long Prometheus may take to scrape and evaluate; generous because the machine is shared.
DATA_DEADLINE_S = 120.0
TRAFFIC_PERIOD_S = 2.0
# Frames of the live stream sent through the gateway's WebSocket each round.
GATEWAY_LIVE_FRAMES = 5


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref_id}"


def dashboard_queries() -> list[DashboardQuery]:
    queries = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append(DashboardQuery(dashboard["uid"], panel["title"], target["refId"], target["expr"]))
    return queries


def recording_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())
    return [(rule["record"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def why_no_data_expected(expr: str) -> str | None:
    """The reason a query cannot have data in this stack, or None when it must."""
    if "nv_gpu_" in expr:
        return "GPU-only metric: the local tritonserver runs without a GPU (--allow-gpu-metrics=false)"
    if "emomesh_llm_" in expr and not os.environ.get("EMOMESH_DIALOG_LLM_API_KEY"):
        # Without a key the dialog service answers with its offline fallback and calls no LLM.
        return "no LLM here: EMOMESH_DIALOG_LLM_API_KEY is unset, so dialog makes no LLM call"
    return None


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


class Prometheus:
    """A real prometheus binary on a free loopback port, with its own storage."""

    def __init__(self, config_path: Path, state_dir: Path) -> None:
        self.port = free_port()
        self.log_path = state_dir / "prometheus.log"
        binary = require_tool("prometheus", "apt-get install prometheus; scripts/setup.sh does")
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={state_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.is_ready, 60, "prometheus", self.process, self.log_path)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def finite_samples(self, expr: str) -> list[dict[str, Any]]:
        return [s for s in self.query(expr) if math.isfinite(float(s["value"][1]))]

    def wait_for_data(self, expr: str) -> list[dict[str, Any]]:
        """Polls until expr has a finite sample; returns the last (possibly empty) answer."""
        deadline = time.monotonic() + DATA_DEADLINE_S
        samples = self.finite_samples(expr)
        while not samples and time.monotonic() < deadline:
            time.sleep(1)
            samples = self.finite_samples(expr)
        return samples

    def stop(self) -> None:
        stop_process(self.process)


def metrics_targets(stack: Stack) -> dict[str, str]:
    """Job name -> host:port of every /metrics the running stack serves (the services, the console
    gateway, Triton), as its endpoints.json gives them."""
    endpoints = stack.endpoints()
    targets = {name: urllib.parse.urlsplit(where["metrics"]).netloc for name, where in endpoints.services.items()}
    targets["triton"] = urllib.parse.urlsplit(endpoints.triton["metrics"]).netloc
    return targets


def prometheus_config_for(stack: Stack, state_dir: Path) -> Path:
    """The committed embedded-stack config with the ephemeral ports, a 1 s scrape and evaluation
    interval, and the committed rule files."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.local.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(PROMETHEUS_DIR / rule_file) for rule_file in config["rule_files"]]
    targets = metrics_targets(stack)
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    assert {job["job_name"] for job in jobs} == set(targets), "prometheus.local.yml lacks a job"
    config["scrape_configs"] = jobs
    path = state_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def tone_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def live_stream(astronaut_jpeg: bytes) -> list[fusion_pb2.StreamRequest]:
    """A short AnalyzeStream: 10 frames and 3.2 s of PCM16 (one audio window), for the live-stream panels."""
    t = np.arange(int(3.2 * 16_000)) / 16_000
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
    start = fusion_pb2.StreamStart(audio_encoding=fusion_pb2.AUDIO_ENCODING_PCM16, sample_rate_hz=16_000, channels=1)
    frames = [fusion_pb2.StreamRequest(frame=fusion_pb2.StreamFrame(encoded=astronaut_jpeg)) for _ in range(10)]
    return [
        fusion_pb2.StreamRequest(start=start),
        *frames,
        fusion_pb2.StreamRequest(audio=fusion_pb2.StreamAudio(data=pcm)),
        fusion_pb2.StreamRequest(end=fusion_pb2.StreamEnd()),
    ]


def service_calls(astronaut_jpeg: bytes) -> dict[str, Callable[[grpc.Channel], object]]:
    """One representative call per service."""
    wav = tone_wav()
    return {
        "vision": lambda ch: vision_pb2_grpc.VisionServiceStub(ch).AnalyzeImage(
            vision_pb2.AnalyzeImageRequest(image=astronaut_jpeg), timeout=60
        ),
        "text": lambda ch: text_pb2_grpc.TextServiceStub(ch).AnalyzeText(
            text_pb2.AnalyzeTextRequest(text="I am so glad you came!"), timeout=60
        ),
        "audio": lambda ch: audio_pb2_grpc.AudioServiceStub(ch).AnalyzeAudio(
            audio_pb2.AnalyzeAudioRequest(audio=wav), timeout=60
        ),
        "fusion": lambda ch: (
            fusion_pb2_grpc.FusionServiceStub(ch).Analyze(
                fusion_pb2.AnalyzeRequest(image=astronaut_jpeg, audio=wav, text="What a lovely day."), timeout=60
            ),
            list(fusion_pb2_grpc.FusionServiceStub(ch).AnalyzeStream(iter(live_stream(astronaut_jpeg)), timeout=60)),
        ),
        "dialog": lambda ch: list(
            dialog_pb2_grpc.DialogServiceStub(ch).Chat(
                dialog_pb2.ChatRequest(session_id="observability", message="I passed my exam!"), timeout=60
            )
        ),
    }


class GatewayTraffic:
    """Requests through the console gateway as the console page makes them, for the gateway's panels:
    GET /readyz, an Analyze of the photo (base64 JSON), a refused image (vision answers INVALID_ARGUMENT:
    a 400 and a series of the upstream-error counter), and a short live stream over the WebSocket
    ({"start"}, frames, {"end"}, then events until {"closed"}). With check, each answer is asserted."""

    def __init__(self, base_url: str, astronaut_jpeg: bytes) -> None:
        self.base_url = base_url.rstrip("/")
        self.image = base64.b64encode(astronaut_jpeg).decode("ascii")

    def run(self, check: bool) -> None:
        asyncio.run(self._round(check))

    async def _round(self, check: bool) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session:
            async with session.get(f"{self.base_url}/readyz") as response:
                ready = await response.json()
                if check:
                    assert response.status == 200 and ready["ready"] is True, ready
            async with session.post(f"{self.base_url}/api/v1/fusion/analyze", json={"image": self.image}) as response:
                analyzed = await response.json()
                if check:
                    assert response.status == 200 and "fused" in analyzed, analyzed
            refused = {"image": base64.b64encode(b"not an image").decode("ascii")}
            async with session.post(f"{self.base_url}/api/v1/vision/analyze-image", json=refused) as response:
                error = await response.json()
                if check:
                    assert (response.status, error["error"]["code"]) == (400, "INVALID_ARGUMENT"), error
            closed = await self._live_stream(session)
            if check:
                assert closed["code"] == "OK", closed

    async def _live_stream(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        url = "ws" + self.base_url.removeprefix("http") + "/api/v1/fusion/stream"
        async with session.ws_connect(url) as ws:
            await ws.send_json({"start": {}})
            for index in range(GATEWAY_LIVE_FRAMES):
                await ws.send_json({"frame": {"encoded": self.image, "timestamp_s": index / 10}})
            await ws.send_json({"end": {}})
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                if "closed" in event:
                    closed: dict[str, Any] = event["closed"]
                    return closed
        raise AssertionError("the live stream's WebSocket closed without a closed message")


class Traffic:
    """Real calls to every running service, and requests through the console gateway, first once in the
    foreground (vision's and the gateway's must succeed), then every TRAFFIC_PERIOD_S in a thread, so
    that rate() windows always hold fresh requests however long the checks take. Other services'
    answers are not asserted here (they have their own tests): a failed call still produces the RPC
    metrics the dashboards show."""

    def __init__(self, stack: Stack, astronaut_jpeg: bytes) -> None:
        self.calls = service_calls(astronaut_jpeg)
        # The gRPC services; the gateway speaks HTTP (GatewayTraffic).
        self.channels = {
            name: grpc.insecure_channel(stack.config.address(name)) for name in stack.processes if name in self.calls
        }
        self.gateway = GatewayTraffic(stack.endpoints().services["gateway"]["http"], astronaut_jpeg)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="observability-traffic", daemon=True)

    def call_all(self) -> None:
        for name, channel in self.channels.items():
            try:
                self.calls[name](channel)
            except grpc.RpcError as exc:
                if name == "vision":
                    raise AssertionError(f"vision failed: {exc}") from exc

    def start(self) -> None:
        self.call_all()
        # One bad request, so that the status-code panels see a non-OK code.
        with pytest.raises(grpc.RpcError) as bad:
            vision_pb2_grpc.VisionServiceStub(self.channels["vision"]).AnalyzeImage(
                vision_pb2.AnalyzeImageRequest(image=b"not an image"), timeout=30
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        self.gateway.run(check=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(TRAFFIC_PERIOD_S):
            with contextlib.suppress(AssertionError):
                self.call_all()
            # Checked once in the foreground; here a failed request (a timeout on a busy machine) only
            # means fewer samples this round.
            with contextlib.suppress(AssertionError, aiohttp.ClientError, TimeoutError, ValueError):
                self.gateway.run(check=False)

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        for channel in self.channels.values():
            channel.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tool("prometheus", "apt-get install prometheus; scripts/setup.sh does")
    with Stack(StackConfig.ephemeral(tmp_path_factory.mktemp("observability-stack"))) as running:
        # The console gateway's panels need it: `emomesh up` starts it with the services.
        assert "gateway" in running.endpoints().services, "the stack runs no console gateway"
        yield running


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory, astronaut_jpeg: bytes) -> Iterator[Prometheus]:
    state = tmp_path_factory.mktemp("observability")
    server = Prometheus(prometheus_config_for(stack, state), state)
    try:
        expected_targets = len(metrics_targets(stack))
        # Every target scraped once before the requests, so that rate() sees them as increases.
        wait_until(lambda: len(server.query("up == 1")) == expected_targets, 60, "first scrape", server.process)
        traffic = Traffic(stack, astronaut_jpeg)
        try:
            traffic.start()
            yield server
        finally:
            traffic.stop()
    finally:
        server.stop()


def test_every_target_is_scraped(prometheus: Prometheus, stack: Stack) -> None:
    up = {s["metric"]["job"]: s["value"][1] for s in prometheus.query("up")}
    assert up == dict.fromkeys(metrics_targets(stack), "1")
    assert {"vision", "audio", "text", "fusion", "dialog", "gateway", "triton"} <= set(up)


@pytest.mark.parametrize("query", dashboard_queries(), ids=str)
def test_dashboard_query_returns_data(prometheus: Prometheus, query: DashboardQuery) -> None:
    reason = why_no_data_expected(query.expr)
    if reason is not None:
        pytest.skip(reason)
    samples = prometheus.wait_for_data(substitute(query.expr))
    assert samples, f"no data for {query}: {query.expr} (Prometheus log: {prometheus.log_path})"


@pytest.mark.parametrize(("record", "expr"), recording_rules(), ids=[r for r, _ in recording_rules()])
def test_recording_rule_returns_data(prometheus: Prometheus, record: str, expr: str) -> None:
    reason = why_no_data_expected(expr)
    if reason is not None:
        pytest.skip(reason)
    assert prometheus.wait_for_data(record), f"recording rule {record} has no data"


def test_rules_evaluate_without_errors(prometheus: Prometheus) -> None:
    def evaluated_rules() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    # A rule's health is "unknown" until its group has been evaluated once.
    wait_until(lambda: all(r["health"] != "unknown" for r in evaluated_rules()), DATA_DEADLINE_S, "rule evaluation")
    rules = evaluated_rules()
    alerts = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    committed = {r for r, _ in recording_rules()} | {r["alert"] for g in alerts["groups"] for r in g["rules"]}
    assert {rule["name"] for rule in rules} == committed
    assert {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"} == {}


def test_vision_latency_is_recorded_by_method_and_code(prometheus: Prometheus) -> None:
    codes = {
        s["metric"]["code"]
        for s in prometheus.wait_for_data('emomesh_rpc_duration_seconds_count{service="vision",method="AnalyzeImage"}')
    }
    assert codes == {"OK", "INVALID_ARGUMENT"}
    triton_models = {s["metric"]["model"] for s in prometheus.wait_for_data("nv_inference_request_success > 0")}
    assert VisionSettings.from_env({}).model_name in triton_models


def test_gateway_metrics_are_labelled_by_route_status_method_and_code(prometheus: Prometheus) -> None:
    requests = {
        (s["metric"]["route"], s["metric"]["status"])
        for s in prometheus.wait_for_data('emomesh_gateway_http_requests_total{route=~"/api/.*|/readyz"}')
    }
    # Route patterns, not raw paths; the live stream is counted with its upgrade's status (101 Switching
    # Protocols) once its WebSocket has ended.
    assert {
        ("/readyz", "200"),
        ("/api/v1/fusion/analyze", "200"),
        ("/api/v1/vision/analyze-image", "400"),
        ("/api/v1/fusion/stream", "101"),
    } <= requests, requests
    errors = {
        (s["metric"]["method"], s["metric"]["code"])
        for s in prometheus.wait_for_data("emomesh_gateway_upstream_errors_total")
    }
    assert ("AnalyzeImage", "INVALID_ARGUMENT") in errors, errors
    directions = {s["metric"]["direction"] for s in prometheus.wait_for_data("emomesh_gateway_ws_messages_total")}
    assert directions == {"in", "out"}


def test_metric_names_follow_prometheus_conventions(prometheus: Prometheus) -> None:
    names = prometheus.get("/api/v1/label/__name__/values")["data"]
    ours = [n for n in names if n.startswith("emomesh_")]
    assert ours, names
    for name in ours:
        assert re.fullmatch(r"emomesh_[a-z0-9_]+", name), name
        # Counters end in _total, durations are in seconds: no _ms / _milliseconds anywhere.
        assert not re.search(r"_(ms|milliseconds|us|microseconds)(_|$)", name), name
