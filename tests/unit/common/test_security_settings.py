"""emomesh.security settings: TLS files and token files are read and checked at start-up (fail fast
with the variable's name), tokens are compared as digests and never shown, and the listen host
decides where metrics listen."""

from __future__ import annotations

from pathlib import Path

import pytest

from emomesh.config import ConfigError, Env, ServerSettings, TritonSettings, listen_host
from emomesh.security import (
    ANONYMOUS_CALLER,
    ClientSecurity,
    ClientTls,
    ServerTls,
    TokenAuth,
    Unauthenticated,
    parse_tokens,
)
from services.fusion.config import FusionSettings
from tests.pki import Pki, make_pki

ALICE_TOKEN = "alice-token-0123456789"
ALICE_NEXT_TOKEN = "alice-token-rotated-9876543210"
BOB_TOKEN = "bob-token-abcdefghijklmnop"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_env(**values: str | Path) -> Env:
    return Env("EMOMESH_GUARDED_", {f"EMOMESH_GUARDED_{k}": str(v) for k, v in values.items()})


def test_server_tls_is_off_without_files_and_reads_them_when_set(pki: Pki) -> None:
    assert ServerTls.from_env(server_env()) is None
    tls = ServerTls.from_env(server_env(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key))
    assert tls is not None and not tls.mutual
    assert tls.certificate_chain == pki.server.cert.read_bytes()
    mutual = ServerTls.from_env(server_env(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key, TLS_CLIENT_CA=pki.ca))
    assert mutual is not None and mutual.mutual
    assert "BEGIN" not in repr(mutual)  # keys never reach a log line


def test_server_tls_fails_fast_on_bad_files(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EMOMESH_GUARDED_TLS_CERT and EMOMESH_GUARDED_TLS_KEY go together"):
        ServerTls.from_env(server_env(TLS_CERT=pki.server.cert))
    with pytest.raises(ConfigError, match=r"EMOMESH_GUARDED_TLS_KEY=.*missing\.key: cannot read it"):
        ServerTls.from_env(server_env(TLS_CERT=pki.server.cert, TLS_KEY=tmp_path / "missing.key"))
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="is not a PEM file"):
        ServerTls.from_env(server_env(TLS_CERT=not_pem, TLS_KEY=pki.server.key))
    with pytest.raises(ConfigError, match="are not a certificate and its key"):
        ServerTls.from_env(server_env(TLS_CERT=pki.server.cert, TLS_KEY=pki.client.key))
    with pytest.raises(ConfigError, match="TLS_CLIENT_CA needs"):
        ServerTls.from_env(server_env(TLS_CLIENT_CA=pki.ca))
    with pytest.raises(ConfigError, match="holds no usable CA certificate"):
        ServerTls.from_env(server_env(TLS_CERT=pki.server.cert, TLS_KEY=pki.server.key, TLS_CLIENT_CA=pki.server.key))


def test_client_tls_variants(pki: Pki) -> None:
    assert ClientTls.from_env(server_env()) is None
    system_roots = ClientTls.from_env(server_env(TLS="true"))
    assert system_roots == ClientTls()
    private_ca = ClientTls.from_env(server_env(TLS_CA=pki.ca))
    assert private_ca is not None and private_ca.root_certificates == pki.ca.read_bytes()
    assert private_ca.certificate_chain is None
    mutual = ClientTls.from_env(server_env(TLS_CA=pki.ca, TLS_CERT=pki.client.cert, TLS_KEY=pki.client.key))
    assert mutual is not None and mutual.private_key == pki.client.key.read_bytes()
    with pytest.raises(ConfigError, match="go together"):
        ClientTls.from_env(server_env(TLS_CA=pki.ca, TLS_CERT=pki.client.cert))
    with pytest.raises(ConfigError, match="TLS is off but TLS files are configured"):
        ClientTls.from_env(server_env(TLS="off", TLS_CA=pki.ca))


def test_token_file_names_callers_and_allows_rotation(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"# caller:token, one per line\n\nalice:{ALICE_TOKEN}\nalice:{ALICE_NEXT_TOKEN}\n  bob : {BOB_TOKEN}  \n"
    )
    auth = TokenAuth.from_env(server_env(AUTH_TOKENS_FILE=tokens))
    assert auth is not None
    assert auth.callers == ("alice", "bob")
    assert auth.caller_for(ALICE_TOKEN) == auth.caller_for(ALICE_NEXT_TOKEN) == "alice"
    assert auth.caller_for(BOB_TOKEN) == "bob"
    assert auth.caller_for("not-a-configured-token") is None
    assert ALICE_TOKEN not in repr(auth) and ALICE_TOKEN.encode() not in b"".join(d for _, d in auth.digests)
    inline = TokenAuth.from_env(server_env(AUTH_TOKENS=f"alice:{ALICE_TOKEN}, bob:{BOB_TOKEN}"))
    assert inline is not None and inline.callers == ("alice", "bob")
    both = TokenAuth.from_env(server_env(AUTH_TOKENS_FILE=tokens, AUTH_TOKENS=f"carol:{'c' * 20}"))
    assert both is not None and both.callers == ("alice", "bob", "carol")
    assert TokenAuth.from_env(server_env()) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("alice", "expected 'caller:token'"),
        ("alice:", "expected 'caller:token'"),
        (f"al ice:{ALICE_TOKEN}", "caller name 'al ice' must match"),
        (f"{ANONYMOUS_CALLER}:{ALICE_TOKEN}", "is reserved"),
        ("alice:short", "must be 16 to 4096 printable ASCII characters"),
        ("alice:has a space in the token", "must be 16 to 4096 printable ASCII characters"),
    ],
)
def test_malformed_token_entries_are_rejected(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tokens([entry], "test")


def test_token_file_problems_fail_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"AUTH_TOKENS_FILE=.*: cannot read it"):
        TokenAuth.from_env(server_env(AUTH_TOKENS_FILE=tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no token"):
        TokenAuth.from_env(server_env(AUTH_TOKENS_FILE=empty))
    with pytest.raises(ConfigError, match="one token is given to both 'alice' and 'bob'"):
        TokenAuth.from_env(server_env(AUTH_TOKENS=f"alice:{ALICE_TOKEN},bob:{ALICE_TOKEN}"))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "no credentials: send the metadata 'authorization: Bearer <token>'"),
        ((("x-request-id", "abc"),), "no credentials"),
        ((("authorization", f"Basic {ALICE_TOKEN}"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer wrong-token-0123456789"),), "invalid bearer token"),
        ((("authorization", f"Bearer {ALICE_TOKEN}"), ("authorization", f"Bearer {BOB_TOKEN}")), "more than one"),
    ],
)
def test_authenticate_rejects(metadata: tuple[tuple[str, str], ...], message: str) -> None:
    auth = TokenAuth.from_pairs([("alice", ALICE_TOKEN), ("bob", BOB_TOKEN)])
    with pytest.raises(Unauthenticated, match=message):
        auth.authenticate(metadata)


def test_authenticate_accepts_a_bearer_token_in_any_case() -> None:
    auth = TokenAuth.from_pairs([("alice", ALICE_TOKEN)])
    assert auth.authenticate([("authorization", f"Bearer {ALICE_TOKEN}")]) == "alice"
    assert auth.authenticate([("authorization", f"bearer  {ALICE_TOKEN} ")]) == "alice"


@pytest.mark.parametrize(
    ("listen", "host"),
    [
        ("127.0.0.1:50051", "127.0.0.1"),
        ("0.0.0.0:50051", "0.0.0.0"),
        ("localhost:50051", "localhost"),
        ("[::]:50051", "::"),
        ("[::1]:50051", "::1"),
        ("unix:/tmp/emomesh.sock", "127.0.0.1"),
    ],
)
def test_listen_host(listen: str, host: str) -> None:
    assert listen_host(listen) == host


def test_metrics_listen_where_grpc_listens_unless_told_otherwise(pki: Pki, tmp_path: Path) -> None:
    local = ServerSettings.from_env("vision", 50051, {})
    assert local.metrics_host == "127.0.0.1" and local.tls is None and local.auth is None
    everywhere = ServerSettings.from_env("vision", 50051, {"EMOMESH_VISION_LISTEN": "0.0.0.0:50051"})
    assert everywhere.metrics_host == "0.0.0.0"
    split = ServerSettings.from_env(
        "vision", 50051, {"EMOMESH_VISION_LISTEN": "127.0.0.1:50051", "EMOMESH_VISION_METRICS_HOST": "0.0.0.0"}
    )
    assert split.metrics_host == "0.0.0.0"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{ALICE_TOKEN}\n")
    secured = ServerSettings.from_env(
        "vision",
        50051,
        {
            "EMOMESH_VISION_TLS_CERT": str(pki.server.cert),
            "EMOMESH_VISION_TLS_KEY": str(pki.server.key),
            "EMOMESH_VISION_AUTH_TOKENS_FILE": str(tokens),
            "EMOMESH_VISION_HEALTH_PORT": "52051",
        },
    )
    assert secured.tls is not None and secured.auth is not None and secured.health_port == 52051
    assert "BEGIN" not in repr(secured) and ALICE_TOKEN not in repr(secured)


def test_triton_tls_settings(pki: Pki) -> None:
    assert TritonSettings.from_env({}).tls is None
    triton = TritonSettings.from_env(
        {
            "EMOMESH_TRITON_TLS_CA": str(pki.ca),
            "EMOMESH_TRITON_TLS_CERT": str(pki.client.cert),
            "EMOMESH_TRITON_TLS_KEY": str(pki.client.key),
        }
    )
    assert triton.tls is not None and triton.tls.certificate_chain == pki.client.cert.read_bytes()


def test_fusion_sends_the_shared_token_unless_a_modality_has_its_own(pki: Pki) -> None:
    settings = FusionSettings.from_env(
        {
            "EMOMESH_FUSION_OUTBOUND_TLS_CA": str(pki.ca),
            "EMOMESH_FUSION_OUTBOUND_TOKEN": ALICE_TOKEN,
            "EMOMESH_FUSION_TEXT_TOKEN": BOB_TOKEN,
        }
    )
    assert {name: s.token for name, s in settings.outbound.items()} == {
        "vision": ALICE_TOKEN,
        "audio": ALICE_TOKEN,
        "text": BOB_TOKEN,
    }
    assert all(s.tls is not None and s.tls.root_certificates == pki.ca.read_bytes() for s in settings.outbound.values())
    assert ALICE_TOKEN not in repr(settings)
    plain = FusionSettings.from_env({})
    assert set(plain.outbound.values()) == {ClientSecurity()}
    with pytest.raises(ConfigError, match="EMOMESH_FUSION_VISION_TOKEN: a token is 16 to 4096"):
        FusionSettings.from_env({"EMOMESH_FUSION_VISION_TOKEN": "short"})


def test_shared_variables_apply_to_every_service_and_a_services_own_win(pki: Pki, tmp_path: Path) -> None:
    shared_tokens, own_tokens = tmp_path / "shared", tmp_path / "own"
    shared_tokens.write_text(f"alice:{ALICE_TOKEN}\n")
    own_tokens.write_text(f"bob:{BOB_TOKEN}\n")
    environ = {
        "EMOMESH_TLS_CERT": str(pki.server.cert),
        "EMOMESH_TLS_KEY": str(pki.server.key),
        "EMOMESH_AUTH_TOKENS_FILE": str(shared_tokens),
        "EMOMESH_HEALTH_PORT": "8090",
        "EMOMESH_TEXT_AUTH_TOKENS_FILE": str(own_tokens),
        "EMOMESH_TEXT_HEALTH_PORT": "0",
    }
    vision = ServerSettings.from_env("vision", 50051, environ)
    assert vision.tls is not None and vision.auth is not None and vision.health_port == 8090
    assert vision.auth.callers == ("alice",)
    text = ServerSettings.from_env("text", 50053, environ)
    assert text.auth is not None and text.auth.callers == ("bob",) and text.health_port == 0
    with pytest.raises(ConfigError, match=r"EMOMESH_VISION_TLS_CERT=.* and EMOMESH_TLS_KEY=.* are not a certificate"):
        ServerSettings.from_env("vision", 50051, {**environ, "EMOMESH_VISION_TLS_CERT": str(pki.client.cert)})
