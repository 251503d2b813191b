import pytest

from emomesh.config import ConfigError, Env, ServerSettings


def test_env_parses_types_and_fails_fast() -> None:
    env = Env("X_", {"X_A": "3", "X_B": "yes", "X_C": "0.5", "X_BAD": "three"})
    assert env.get_int("A", 1) == 3
    assert env.get_bool("B", False) is True
    assert env.get_float("C", 1.0) == 0.5
    assert env.get_int("MISSING", 7) == 7
    with pytest.raises(ConfigError, match="X_BAD='three' is not an integer"):
        env.get_int("BAD", 1)
    with pytest.raises(ConfigError, match="X_REQUIRED is required"):
        env.get_str("REQUIRED")
    with pytest.raises(ConfigError, match="below the minimum"):
        env.get_int("A", 1, minimum=5)


def test_server_settings_defaults_and_overrides() -> None:
    settings = ServerSettings.from_env("vision", 50051, {"EMOMESH_VISION_LISTEN": "0.0.0.0:9000"})
    assert settings.listen == "0.0.0.0:9000"
    assert settings.metrics_port == 51051
    assert settings.max_message_bytes == 32 * 1024 * 1024
