"""Transport security and caller authentication, shared by every Emomesh gRPC server and client.

Servers: TLS (`EMOMESH_<SVC>_TLS_CERT` + `_TLS_KEY`), mutual TLS (plus `_TLS_CLIENT_CA`: clients
must present a certificate signed by it), and bearer tokens (`_AUTH_TOKENS_FILE`, `_AUTH_TOKENS`),
each with a shared `EMOMESH_<NAME>` fallback for every service. Token entries are `caller:token`,
so one caller may hold several tokens while they rotate, and every token names its caller. The
token interceptor answers UNAUTHENTICATED without a valid `authorization: Bearer
<token>` metadata entry; health checks stay open (Kubernetes probes carry no credentials),
reflection does not (it describes the API to whoever can call it, so it asks the same credentials).
The authenticated caller's name is available to the servicer (`current_caller()`); without token
auth every caller is ANONYMOUS_CALLER.

Clients: ClientTls (CA, optional client certificate) and ClientSecurity (TLS plus the bearer token
to send), and one place that opens channels, secure or not, sync or asyncio (`open_channel`,
`open_aio_channel`): the token is added by a channel interceptor, so call sites do not handle it.

Every file is read and checked once, at start-up: a missing, unreadable or mismatched certificate or
key, or a malformed token file, is a ConfigError before the server listens."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from emomesh.config import ConfigError, Env
from emomesh.interceptors import Behavior, HandlerInterceptor, rewrap_handler

log = logging.getLogger(__name__)

AUTHORIZATION_HEADER = "authorization"
# The identity of every caller when a service does not authenticate callers (no token auth).
ANONYMOUS_CALLER = "anonymous"
# Caller names end up in logs and in storage keys (dialog history): a small, safe alphabet.
CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Printable ASCII without spaces: what fits an HTTP/2 header value as `Bearer <token>`.
TOKEN = re.compile(r"[\x21-\x7e]{16,4096}")
# Methods that answer without credentials: probes (kubelet, load balancers) cannot send any.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("emomesh_caller", default=ANONYMOUS_CALLER)


def current_caller() -> str:
    """The authenticated caller of the RPC being served (ANONYMOUS_CALLER without token auth)."""
    return _caller.get()


# -- settings read from the environment -------------------------------------------------------------


class _Variables:
    """Looks a setting up under several prefixes in turn: a service's own, then the shared one."""

    def __init__(self, *envs: Env) -> None:
        self.envs = envs

    def get(self, name: str) -> tuple[str, str] | None:
        """(full variable name, value) of the first prefix that sets `name`."""
        for env in self.envs:
            value = env.get_optional_str(name)
            if value is not None:
                return env.prefix + name, value
        return None

    def name(self, name: str) -> str:
        return self.envs[0].prefix + name


def _pem_path(variables: _Variables, name: str) -> tuple[str, Path] | None:
    """(variable, path) of the PEM file a variable names, checked to be readable and hold PEM data."""
    found = variables.get(name)
    if found is None:
        return None
    variable, value = found
    path = Path(value)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}={value}: cannot read it ({exc.strerror or exc})") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{variable}={value} is not a PEM file")
    return variable, path


def _key_pair(variables: _Variables) -> tuple[Path, Path] | None:
    """TLS_CERT and TLS_KEY, both or neither; fails now, not at the first handshake, when the key
    does not belong to the certificate."""
    cert, key = _pem_path(variables, "TLS_CERT"), _pem_path(variables, "TLS_KEY")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            f"{variables.name('TLS_CERT')} and {variables.name('TLS_KEY')} go together: set both or neither"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert[1], key[1])
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{cert[0]}={cert[1]} and {key[0]}={key[1]} are not a certificate and its key ({exc})"
        ) from exc
    return cert[1], key[1]


def _ca(variables: _Variables, name: str) -> Path | None:
    found = _pem_path(variables, name)
    if found is None:
        return None
    try:
        ssl.create_default_context(cafile=str(found[1]))
    except ssl.SSLError as exc:
        raise ConfigError(f"{found[0]}={found[1]} holds no usable CA certificate ({exc})") from exc
    return found[1]


# -- server side ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and key (PEM), and for mutual TLS the CA of client certificates."""

    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    # Set: mutual TLS, a client without a certificate signed by this CA cannot connect.
    client_ca: bytes | None = field(default=None, repr=False)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    @classmethod
    def from_env(cls, env: Env, shared: Env | None = None) -> ServerTls | None:
        """Reads TLS_CERT, TLS_KEY and TLS_CLIENT_CA under env's prefix, else under shared's; None
        when no certificate is configured."""
        variables = _Variables(env, *([shared] if shared is not None else []))
        pair, client_ca = _key_pair(variables), _ca(variables, "TLS_CLIENT_CA")
        if pair is None:
            if client_ca is not None:
                raise ConfigError(
                    f"{variables.name('TLS_CLIENT_CA')} needs {variables.name('TLS_CERT')} and "
                    f"{variables.name('TLS_KEY')}"
                )
            return None
        cert, key = pair
        return cls(cert.read_bytes(), key.read_bytes(), client_ca.read_bytes() if client_ca else None)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.mutual,
        )


def bind(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    """Adds the listening port, with TLS when configured; returns the bound port (0 on failure)."""
    if tls is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, tls.credentials()))


class Unauthenticated(Exception):
    """The call carries no valid credentials; the message is safe to show the caller."""


def _digest(token: str) -> bytes:
    # Compared as fixed-length digests, so neither the content nor the length of a configured token
    # shows in the comparison time.
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(entries: Iterable[str], source: str) -> list[tuple[str, str]]:
    """(caller, token) pairs from `caller:token` entries; blank entries and `#` comments are skipped."""
    pairs = []
    for number, raw in enumerate(entries, 1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        caller, sep, token = entry.partition(":")
        caller, token = caller.strip(), token.strip()
        where = f"{source} entry {number}"
        if not sep or not token:
            raise ConfigError(f"{where}: expected 'caller:token'")
        if not CALLER_NAME.fullmatch(caller):
            raise ConfigError(f"{where}: caller name {caller[:64]!r} must match {CALLER_NAME.pattern}")
        if caller == ANONYMOUS_CALLER:
            raise ConfigError(f"{where}: the caller name {ANONYMOUS_CALLER!r} is reserved for unauthenticated calls")
        if not TOKEN.fullmatch(token):
            raise ConfigError(f"{where}: the token of {caller!r} must be 16 to 4096 printable ASCII characters")
        pairs.append((caller, token))
    return pairs


@dataclass(frozen=True)
class TokenAuth:
    """Accepted bearer tokens, each naming its caller. Only SHA-256 digests are kept."""

    digests: tuple[tuple[str, bytes], ...] = field(repr=False)

    @property
    def callers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(caller for caller, _ in self.digests))

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> TokenAuth:
        digests: dict[bytes, str] = {}
        for caller, token in pairs:
            digest = _digest(token)
            if digests.get(digest, caller) != caller:
                raise ConfigError(f"one token is given to both {digests[digest]!r} and {caller!r}")
            digests[digest] = caller
        return cls(tuple((caller, digest) for digest, caller in digests.items()))

    @classmethod
    def from_env(cls, env: Env, shared: Env | None = None) -> TokenAuth | None:
        """Reads AUTH_TOKENS_FILE (one `caller:token` per line) and AUTH_TOKENS (comma-separated
        entries), each under env's prefix, else under shared's; None when neither is set (no
        authentication)."""
        variables = _Variables(env, *([shared] if shared is not None else []))
        pairs: list[tuple[str, str]] = []
        found = variables.get("AUTH_TOKENS_FILE")
        if found is not None:
            variable, path = found
            try:
                text = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{variable}={path}: cannot read it ({exc})") from exc
            pairs += parse_tokens(text.splitlines(), f"{variable}={path}")
            if not pairs:
                raise ConfigError(f"{variable}={path} holds no token")
        inline = variables.get("AUTH_TOKENS")
        if inline is not None:
            pairs += parse_tokens(inline[1].split(","), inline[0])
        return cls.from_pairs(pairs) if pairs else None

    def caller_for(self, token: str) -> str | None:
        """The caller that holds `token`, or None. Every configured token is compared, in constant time."""
        candidate = _digest(token)
        found = None
        for caller, digest in self.digests:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = caller
        return found

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
        """The caller named by the call's `authorization: Bearer <token>` metadata; raises Unauthenticated."""
        values = [value for key, value in metadata or () if key == AUTHORIZATION_HEADER]
        if not values:
            raise Unauthenticated(f"no credentials: send the metadata '{AUTHORIZATION_HEADER}: Bearer <token>'")
        if len(values) > 1:
            raise Unauthenticated(f"more than one '{AUTHORIZATION_HEADER}' metadata entry")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(f"'{AUTHORIZATION_HEADER}' metadata must be 'Bearer <token>'")
        caller = self.caller_for(token.strip())
        if caller is None:
            raise Unauthenticated("invalid bearer token")
        return caller


def _rejecting(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    def single(_: Behavior) -> Behavior:
        async def reject(_request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        return reject

    def streaming(_: Behavior) -> Behavior:
        async def reject(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            # Never reached (abort raises); makes this an async generator, as streamed responses need.
            yield None

        return reject

    return rewrap_handler(handler, single, streaming)


def _as_caller(handler: grpc.RpcMethodHandler, caller: str) -> grpc.RpcMethodHandler:
    """The handler, run with current_caller() == caller."""

    def single(inner: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = _caller.set(caller)
            try:
                return await inner(request, context)
            finally:
                _caller.reset(token)

        return call

    def streaming(inner: Behavior) -> Behavior:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = _caller.set(caller)
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                _caller.reset(token)

        return call

    return rewrap_handler(handler, single, streaming)


class TokenAuthInterceptor(HandlerInterceptor):
    """Rejects calls without a valid bearer token (UNAUTHENTICATED, before the servicer runs) and
    runs the others as their caller. Health checks pass without credentials."""

    def __init__(self, auth: TokenAuth) -> None:
        self.auth = auth

    # Health stays open for probes; reflection describes the API, so it needs a token like the rest.
    passthrough_prefixes = OPEN_METHOD_PREFIXES

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        try:
            caller = self.auth.authenticate(details.invocation_metadata)
        except Unauthenticated as exc:
            log.warning("unauthenticated call rejected", extra={"fields": {"method": method, "reason": str(exc)}})
            return _rejecting(handler, str(exc))
        return _as_caller(handler, caller)


def server_interceptors(auth: TokenAuth | None) -> list[grpc.aio.ServerInterceptor]:
    return [] if auth is None else [TokenAuthInterceptor(auth)]


# -- client side --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTls:
    """TLS towards a server: the CA to trust (None: the system's roots) and, for mutual TLS, this
    client's certificate chain and key."""

    root_certificates: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> ClientTls | None:
        """Reads <prefix>TLS (on/off; on by default once a CA or certificate is given), TLS_CA,
        TLS_CERT and TLS_KEY; None for a plaintext channel."""
        variables = _Variables(env)
        ca, pair = _ca(variables, "TLS_CA"), _key_pair(variables)
        if not env.get_bool("TLS", ca is not None or pair is not None):
            if ca is not None or pair is not None:
                raise ConfigError(f"{env.prefix}TLS is off but TLS files are configured")
            return None
        cert, key = pair if pair is not None else (None, None)
        return cls(
            ca.read_bytes() if ca else None,
            cert.read_bytes() if cert else None,
            key.read_bytes() if key else None,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def read_token(env: Env, name: str) -> str | None:
    """A bearer token to send, from env variable `name` (None when unset)."""
    token = env.get_optional_str(name)
    if token is not None and not TOKEN.fullmatch(token):
        raise ConfigError(f"{env.prefix}{name}: a token is 16 to 4096 printable ASCII characters")
    return token


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches one server: TLS (None: plaintext) and the bearer token it sends."""

    tls: ClientTls | None = None
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> ClientSecurity:
        """TLS as in ClientTls.from_env, and <prefix>TOKEN as the bearer token."""
        return cls(ClientTls.from_env(env), read_token(env, "TOKEN"))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.token is None else ((AUTHORIZATION_HEADER, f"Bearer {self.token}"),)


class _AioMetadata:
    """Adds fixed metadata (the bearer token) to the calls of an asyncio channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()), *self.metadata))


class _AioUnaryUnaryMetadata(_AioMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioUnaryStreamMetadata(_AioMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AioStreamUnaryMetadata(_AioMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _AioStreamStreamMetadata(_AioMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def _aio_metadata_interceptors(metadata: tuple[tuple[str, str], ...]) -> list[grpc.aio.ClientInterceptor]:
    # One object per call kind: grpc.aio files an interceptor under the first kind it implements only.
    kinds = (_AioUnaryUnaryMetadata, _AioUnaryStreamMetadata, _AioStreamUnaryMetadata, _AioStreamStreamMetadata)
    return [kind(metadata) for kind in kinds]


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call of a blocking channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def open_aio_channel(
    address: str,
    security: ClientSecurity | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to `address`: TLS when security.tls is set, the token on every call, and
    the given interceptors (tracing's, say) in front."""
    security = security or ClientSecurity()
    token_interceptors = _aio_metadata_interceptors(security.metadata()) if security.token else []
    chain = [*interceptors, *token_interceptors] or None
    if security.tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    return grpc.aio.secure_channel(address, security.tls.credentials(), options=options, interceptors=chain)


def open_channel(
    address: str, security: ClientSecurity | None = None, options: Sequence[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A blocking channel to `address`, as open_aio_channel."""
    security = security or ClientSecurity()
    if security.tls is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, security.tls.credentials(), options=options)
    if security.token:
        channel = grpc.intercept_channel(channel, _MetadataInterceptor(security.metadata()))
    return channel
