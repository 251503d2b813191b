"""GatewaySettings from the environment: the documented defaults, tokens per service, fail-fast errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from emomesh.config import ConfigError
from services.gateway.config import DEFAULT_STATIC_DIR, GatewaySettings

TOKEN = "t" * 20


def test_defaults_are_the_documented_ports_and_no_upstream() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.listen == "127.0.0.1:8080"
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 8080, 9080)
    assert settings.metrics_host == "127.0.0.1"
    assert {name: u.address for name, u in settings.upstreams.items()} == {
        "fusion": None,
        "dialog": None,
        "vision": None,
    }
    assert settings.static_dir == DEFAULT_STATIC_DIR
    assert settings.tls_cert is None


def test_upstreams_and_tokens_a_service_token_wins_over_the_shared_one() -> None:
    settings = GatewaySettings.from_env(
        {
            "EMOMESH_GATEWAY_LISTEN": "0.0.0.0:18080",
            "EMOMESH_GATEWAY_FUSION_ADDR": "fusion:50054",
            "EMOMESH_GATEWAY_DIALOG_ADDR": "dialog:50055",
            "EMOMESH_GATEWAY_OUTBOUND_TOKEN": TOKEN,
            "EMOMESH_GATEWAY_DIALOG_TOKEN": "d" * 20,
        }
    )
    assert (settings.port, settings.metrics_host) == (18080, "0.0.0.0")
    assert settings.upstreams["fusion"].address == "fusion:50054"
    assert settings.upstreams["fusion"].security.token == TOKEN
    assert settings.upstreams["dialog"].security.token == "d" * 20
    assert settings.upstreams["vision"].security.token == TOKEN


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EMOMESH_GATEWAY_LISTEN": "localhost"}, "is not HOST:PORT"),
        ({"EMOMESH_GATEWAY_TLS_CERT": "/etc/hostname"}, "go together"),
        ({"EMOMESH_GATEWAY_TLS_CERT": "/no/cert.pem", "EMOMESH_GATEWAY_TLS_KEY": "/no/key.pem"}, "no such file"),
        ({"EMOMESH_GATEWAY_MAX_STREAMS": "0"}, "below the minimum 1"),
        ({"EMOMESH_GATEWAY_DIALOG_TOKEN": "short"}, "16 to 4096 printable"),
        ({"EMOMESH_GATEWAY_MAX_INFLIGHT_BYTES": "2048"}, "below the body limit"),
    ],
)
def test_bad_settings_fail_at_start_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GatewaySettings.from_env(environ)


def test_a_static_dir_without_the_console_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no index\.html"):
        GatewaySettings.from_env({"EMOMESH_GATEWAY_STATIC_DIR": str(tmp_path)})
