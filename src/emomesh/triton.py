"""Async client for models served by Triton: named tensors in, named tensors out, one deadline per
call, Triton errors mapped to Emomesh errors (and so to gRPC statuses), latency recorded by model and a
trace span per inference (its context sent to Triton as gRPC metadata, so Triton's own tracing can join)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from emomesh.config import TritonSettings
from emomesh.errors import DeadlineExceeded, EmomeshError, InvalidInput, Unavailable
from emomesh.logs import get_request_id
from emomesh.metrics import TRITON_LATENCY
from emomesh.redact import scrub_addresses
from emomesh.tracing import OUTCOME, trace_headers, triton_span
from emotion.common.v1 import common_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    # Per-item shape (without the batch dimension); -1 for variable dimensions.
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """What Triton reports about a model: its version and named tensors."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    # The config's string parameters (e.g. `emomesh_model_version`, the artifact's own version).
    parameters: dict[str, str]

    @property
    def display_version(self) -> str:
        return self.parameters.get("emomesh_model_version", self.version)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"model {self.name} has no input {name!r}")


# tritonclient's own defaults (unlimited message size, its keepalive), plus a short reconnect backoff:
# after Triton restarts (a crash, a rollout) the channel reconnects within about 2 s instead of
# after gRPC's default backoff, which grows to 120 s while Triton is away.
_KEEPALIVE = triton_aio.KeepAliveOptions()
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", triton_aio.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", triton_aio.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _map_error(model: str, exc: InferenceServerException) -> EmomeshError:
    """The Emomesh error for a failed Triton call. tritonclient's message names Triton's address
    ("failed to connect to all addresses; last error: ... ipv4:10.0.3.7:8001: ..."): it is logged in
    full and reaches the caller scrubbed."""
    status = (exc.status() or "").upper()
    full_message = exc.message() or str(exc)
    log.warning("triton call failed", extra={"fields": {"model": model, "status": status, "message": full_message}})
    message = scrub_addresses(full_message)
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return DeadlineExceeded(f"model {model} did not answer in time")
    if "INVALID_ARG" in status:
        return InvalidInput(f"model {model} rejected the input: {message}")
    return Unavailable(f"model {model} is unavailable: {message}")


class TritonClient:
    """One gRPC channel to Triton, shared by all models of a process. Create inside the event loop."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        credentials = settings.tls.credentials() if settings.tls is not None else None
        self._client = triton_aio.InferenceServerClient(url=settings.url, creds=credentials, channel_args=CHANNEL_ARGS)

    @property
    def url(self) -> str:
        return self.settings.url

    async def close(self) -> None:
        await self._client.close()

    async def is_live(self, timeout_s: float | None = None) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout_s or self.settings.timeout_s))
        except InferenceServerException:
            return False

    async def is_ready(self, model: str, timeout_s: float | None = None) -> bool:
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=timeout_s or self.settings.timeout_s))
        except InferenceServerException:
            return False

    async def model_spec(self, model: str) -> ModelSpec:
        try:
            meta = await self._client.get_model_metadata(model, as_json=True, client_timeout=self.settings.timeout_s)
            config = await self._client.get_model_config(model, as_json=True, client_timeout=self.settings.timeout_s)
        except InferenceServerException as exc:
            raise _map_error(model, exc) from exc
        max_batch_size = int(config.get("config", {}).get("max_batch_size", 0))
        batched = max_batch_size > 0
        parameters = {
            key: str(value.get("string_value", ""))
            for key, value in config.get("config", {}).get("parameters", {}).items()
        }

        def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            out = []
            for item in items:
                shape = tuple(int(d) for d in item.get("shape", []))
                out.append(TensorSpec(str(item["name"]), str(item["datatype"]), shape[1:] if batched else shape))
            return tuple(out)

        versions = meta.get("versions") or [""]
        return ModelSpec(
            model,
            str(versions[-1]),
            specs(meta.get("inputs", [])),
            specs(meta.get("outputs", [])),
            max_batch_size,
            parameters,
        )

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs one inference. `timeout_s` defaults to the configured per-call deadline."""
        infer_inputs = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            infer_inputs.append(tensor)
        requested = [InferRequestedOutput(name) for name in outputs]
        # Rows of the first input: the batch size for a batched model.
        rows = next((int(a.shape[0]) for a in inputs.values() if a.ndim > 0), 1)
        with triton_span(model, rows) as span:
            start = time.perf_counter()
            outcome = "ok"
            try:
                result = await self._client.infer(
                    model,
                    infer_inputs,
                    outputs=requested,
                    request_id=get_request_id(),
                    client_timeout=timeout_s or self.settings.timeout_s,
                    headers=trace_headers(),
                )
            except InferenceServerException as exc:
                error = _map_error(model, exc)
                outcome = type(error).__name__.lower()
                raise error from exc
            finally:
                TRITON_LATENCY.labels(model, outcome).observe(time.perf_counter() - start)
                span.set_attribute(OUTCOME, outcome)
        return {name: result.as_numpy(name) for name in outputs}


class InferenceClient(Protocol):
    """What a ServedModel needs from Triton: TritonClient in the services, a fake in unit tests."""

    async def model_spec(self, model: str) -> ModelSpec: ...

    async def infer(
        self, model: str, inputs: dict[str, np.ndarray], outputs: list[str], timeout_s: float | None = None
    ) -> dict[str, np.ndarray]: ...


class ServedModel:
    """A Triton model as a service uses it: the spec read once at start (so a missing or mismatched
    model fails the start, not the first request), the ModelInfo the service reports, and
    inference split into chunks of the model's max_batch_size. Services subclass it with `check`
    (what the model must take) and a typed `classify`."""

    def __init__(self, client: InferenceClient, name: str) -> None:
        self.client = client
        self.name = name
        self._spec: ModelSpec | None = None

    def check(self, spec: ModelSpec) -> None:
        """Raises if the served model does not take what this service sends (default: accept)."""

    async def load(self) -> ModelSpec:
        spec = await self.client.model_spec(self.name)
        self.check(spec)
        self._spec = spec
        return spec

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__}.load() was not awaited")
        return self._spec

    @property
    def info(self) -> common_pb2.ModelInfo:
        return common_pb2.ModelInfo(name=self.name, version=self.spec.display_version)

    async def infer_in_chunks(
        self, count: int, inputs_for: Callable[[slice], dict[str, np.ndarray]], output: str | None = None
    ) -> np.ndarray:
        """Runs `count` items as consecutive chunks of at most max_batch_size rows: inputs_for(rows)
        gives the named input tensors of a chunk. Returns the output rows concatenated, float32."""
        output = output or self.spec.outputs[0].name
        return (await self.infer_outputs_in_chunks(count, inputs_for, [output]))[output]

    async def infer_outputs_in_chunks(
        self, count: int, inputs_for: Callable[[slice], dict[str, np.ndarray]], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """As infer_in_chunks, for several outputs of the same calls: each output's rows, float32."""
        if count == 0:
            shapes = {o.name: o.shape for o in self.spec.outputs}
            return {name: np.zeros((0, *shapes[name]), dtype=np.float32) for name in outputs}
        step = self.spec.max_batch_size or count
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for start in range(0, count, step):
            result = await self.client.infer(self.name, inputs_for(slice(start, start + step)), outputs)
            for name in outputs:
                chunks[name].append(result[name])
        return {name: np.concatenate(rows).astype(np.float32) for name, rows in chunks.items()}
