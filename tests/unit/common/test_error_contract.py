"""The error contract of every service, through a real GrpcServer (its interceptor) and a real gRPC
channel: an EmomeshError becomes its status code with its message; any other exception becomes
INTERNAL with a message that names the request id and nothing of the exception; every call carries
the request id in its `x-request-id` trailer (the caller's own when it sent one). Checked for unary,
client-streaming and server-streaming methods, with test servicers whose methods raise."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from emomesh import errors
from emomesh.config import ServerSettings
from emomesh.errors import EmomeshError
from emomesh.logs import REQUEST_ID_HEADER
from emomesh.server import GrpcServer
from emotion.dialog.v1 import dialog_pb2, dialog_pb2_grpc
from emotion.vision.v1 import vision_pb2, vision_pb2_grpc
from tests.conftest import serving

# The status each error class stands for: the contract, written out (not read back from the classes).
EXPECTED_CODES: dict[type[EmomeshError], grpc.StatusCode] = {
    errors.EmomeshError: grpc.StatusCode.INTERNAL,
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}
SECRET = "password=hunter2 in /srv/emomesh/db.sqlite"
CALLER_ID = "caller-chosen-id-42"


class SelfAbort(Exception):
    """Tells a test servicer to abort the call itself (context.abort) instead of raising."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Behaviour:
    """What the test servicers do: succeed (error None) or fail with `error`, after streaming
    `chunks_before` messages on a streaming response."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.chunks_before = 0

    async def fail(self, context: grpc.aio.ServicerContext) -> None:
        if isinstance(self.error, SelfAbort):
            await context.abort(self.error.code, self.error.details)
        if self.error is not None:
            raise self.error


class FailingDialog(dialog_pb2_grpc.DialogServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def Greeting(
        self, request: dialog_pb2.GreetingRequest, context: grpc.aio.ServicerContext
    ) -> dialog_pb2.GreetingResponse:
        await self.behaviour.fail(context)
        return dialog_pb2.GreetingResponse(text="hello")

    async def Chat(
        self, request: dialog_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dialog_pb2.ChatChunk]:
        for index in range(self.behaviour.chunks_before):
            yield dialog_pb2.ChatChunk(delta=f"part {index}")
        await self.behaviour.fail(context)
        yield dialog_pb2.ChatChunk(delta="the end")


class FailingVision(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def AnalyzeVideoStream(
        self, request_iterator: AsyncIterator[vision_pb2.VideoChunk], context: grpc.aio.ServicerContext
    ) -> vision_pb2.AnalyzeVideoResponse:
        async for _ in request_iterator:
            pass
        await self.behaviour.fail(context)
        return vision_pb2.AnalyzeVideoResponse()


@dataclass
class Served:
    behaviour: Behaviour
    dialog: dialog_pb2_grpc.DialogServiceStub
    vision: vision_pb2_grpc.VisionServiceStub


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    behaviour = Behaviour()

    def register(server: grpc.aio.Server) -> None:
        dialog_pb2_grpc.add_DialogServiceServicer_to_server(FailingDialog(behaviour), server)
        vision_pb2_grpc.add_VisionServiceServicer_to_server(FailingVision(behaviour), server)

    settings = ServerSettings(
        listen="127.0.0.1:0", metrics_port=0, grace_s=0, max_message_bytes=1024 * 1024, log_level="INFO"
    )
    names = [
        dialog_pb2.DESCRIPTOR.services_by_name["DialogService"].full_name,
        vision_pb2.DESCRIPTOR.services_by_name["VisionService"].full_name,
    ]
    async with serving(GrpcServer("contract", settings, register, names)) as channel:
        yield Served(behaviour, dialog_pb2_grpc.DialogServiceStub(channel), vision_pb2_grpc.VisionServiceStub(channel))


@dataclass
class Outcome:
    """How a call ended, as the caller sees it."""

    code: grpc.StatusCode
    details: str
    request_id: str | None
    messages: int


def request_id_of(trailers: grpc.aio.Metadata | None) -> str | None:
    values = [value for key, value in trailers or () if key == REQUEST_ID_HEADER]
    assert len(values) <= 1, f"one {REQUEST_ID_HEADER} trailer at most, got {values}"
    return str(values[0]) if values else None


async def outcome_of(call: grpc.aio.Call, messages: int = 0) -> Outcome:
    request_id = request_id_of(await call.trailing_metadata())
    return Outcome(await call.code(), await call.details() or "", request_id, messages)


async def unary(served: Served, metadata: grpc.aio.Metadata) -> Outcome:
    call = served.dialog.Greeting(dialog_pb2.GreetingRequest(session_id="s"), metadata=metadata, timeout=10)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return await outcome_of(call)


async def client_streaming(served: Served, metadata: grpc.aio.Metadata) -> Outcome:
    chunks = [vision_pb2.VideoChunk(data=b"x" * 10, uniform_frames=4), vision_pb2.VideoChunk(data=b"y" * 10)]
    call = served.vision.AnalyzeVideoStream(iter(chunks), metadata=metadata, timeout=10)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call
    return await outcome_of(call)


def server_streaming(chunks_before: int) -> Callable[[Served, grpc.aio.Metadata], Awaitable[Outcome]]:
    async def call_chat(served: Served, metadata: grpc.aio.Metadata) -> Outcome:
        served.behaviour.chunks_before = chunks_before
        call = served.dialog.Chat(dialog_pb2.ChatRequest(session_id="s", message="hi"), metadata=metadata, timeout=10)
        received = 0
        try:
            async for _ in call:
                received += 1
        except grpc.aio.AioRpcError:
            pass
        return await outcome_of(call, received)

    return call_chat


CALLS = {
    "unary": unary,
    "client-streaming": client_streaming,
    "server-streaming": server_streaming(0),
    "server-streaming after a message": server_streaming(1),
}


def metadata_for(caller_id: str | None) -> grpc.aio.Metadata:
    return grpc.aio.Metadata((REQUEST_ID_HEADER, caller_id)) if caller_id else grpc.aio.Metadata()


def assert_request_id(outcome: Outcome, caller_id: str | None) -> str:
    assert outcome.request_id is not None, f"no {REQUEST_ID_HEADER} trailer"
    if caller_id is None:
        assert re.fullmatch(r"[0-9a-f]{16}", outcome.request_id), "a fresh id when the caller sent none"
    else:
        assert outcome.request_id == caller_id
    return outcome.request_id


def test_every_error_class_has_its_expected_status() -> None:
    classes = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, EmomeshError)}
    assert classes == set(EXPECTED_CODES), "a new error class needs its status in EXPECTED_CODES"
    assert {cls: cls.code for cls in classes} == EXPECTED_CODES


@pytest.mark.parametrize("caller_id", [CALLER_ID, None], ids=["caller id", "no caller id"])
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize("error_class", EXPECTED_CODES, ids=lambda c: c.__name__)
async def test_emomesh_error_is_its_status_with_its_message(
    served: Served,
    call: Callable[[Served, grpc.aio.Metadata], Awaitable[Outcome]],
    error_class: type[EmomeshError],
    caller_id: str | None,
) -> None:
    served.behaviour.error = error_class(f"{error_class.__name__}: what the caller may read")
    outcome = await call(served, metadata_for(caller_id))
    assert outcome.code == EXPECTED_CODES[error_class]
    assert outcome.details == f"{error_class.__name__}: what the caller may read"
    assert_request_id(outcome, caller_id)


@pytest.mark.parametrize("caller_id", [CALLER_ID, None], ids=["caller id", "no caller id"])
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
@pytest.mark.parametrize(
    "unexpected", [ValueError(SECRET), KeyError(SECRET), AssertionError(SECRET)], ids=lambda e: type(e).__name__
)
async def test_unexpected_error_is_internal_and_names_only_the_request_id(
    served: Served,
    call: Callable[[Served, grpc.aio.Metadata], Awaitable[Outcome]],
    unexpected: Exception,
    caller_id: str | None,
) -> None:
    served.behaviour.error = unexpected
    outcome = await call(served, metadata_for(caller_id))
    assert outcome.code == grpc.StatusCode.INTERNAL
    request_id = assert_request_id(outcome, caller_id)
    assert outcome.details == f"internal error (request id {request_id})"
    assert "hunter2" not in outcome.details and type(unexpected).__name__ not in outcome.details


async def test_messages_streamed_before_the_error_reach_the_caller(served: Served) -> None:
    served.behaviour.error = errors.Unavailable("the LLM went away")
    outcome = await server_streaming(2)(served, metadata_for(None))
    assert (outcome.messages, outcome.code, outcome.details) == (2, grpc.StatusCode.UNAVAILABLE, "the LLM went away")


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_servicer_that_aborts_by_itself_keeps_its_status(
    served: Served, call: Callable[[Served, grpc.aio.Metadata], Awaitable[Outcome]]
) -> None:
    served.behaviour.error = SelfAbort(grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")
    outcome = await call(served, metadata_for(CALLER_ID))
    assert (outcome.code, outcome.details) == (grpc.StatusCode.FAILED_PRECONDITION, "aborted by the servicer")
    assert_request_id(outcome, CALLER_ID)


@pytest.mark.parametrize("caller_id", [CALLER_ID, None], ids=["caller id", "no caller id"])
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_a_successful_call_carries_the_request_id_too(
    served: Served, call: Callable[[Served, grpc.aio.Metadata], Awaitable[Outcome]], caller_id: str | None
) -> None:
    outcome = await call(served, metadata_for(caller_id))
    assert outcome.code == grpc.StatusCode.OK
    assert_request_id(outcome, caller_id)
