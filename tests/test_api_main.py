"""`python -m api`: settings from flags and environment; a bad setting exits 2 naming it."""

from __future__ import annotations

import pytest

from api.__main__ import main
from api.settings import from_env
from worker.errors import ConfigError


def test_environment_settings_for_fly() -> None:
    settings = from_env(
        {
            "QF_API_DB": "/tmp/replica/quantumflow.db",
            "QF_API_PORT": "8080",
            "QF_API_HEARTBEAT_MAX_AGE_S": "15",
            "QF_CALENDAR_TZ": "America/New_York",
            "QF_CALENDAR_LAT": "40.7",
            "QF_CALENDAR_LON": "-74",
        },
        port=9000,
    )
    assert settings.db_path == "/tmp/replica/quantumflow.db" and settings.port == 9000
    assert settings.heartbeat_max_age_s == 15 and settings.calendar.location.tz == "America/New_York"


@pytest.mark.parametrize(
    ("env", "param"),
    [
        ({}, "db"),
        ({"QF_API_DB": "x.db", "QF_API_PORT": "http"}, "QF_API_PORT"),
        ({"QF_API_DB": "x.db", "QF_API_PORT": "70000"}, "port"),
        ({"QF_API_DB": "x.db", "QF_CALENDAR_TZ": "Mars/Olympus"}, "tz"),
    ],
)
def test_bad_settings_name_the_parameter(env: dict[str, str], param: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    assert param in str(info.value)


def test_main_exits_2_on_a_bad_setting(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("QF_API_DB", raising=False)
    monkeypatch.delenv("QF_DB", raising=False)
    assert main(["--port", "8080"]) == 2
    assert "db" in capsys.readouterr().err
    assert main(["--db", "x.db", "--tz", "Nowhere/Land"]) == 2


def test_follow_copies_get_a_fresh_connection_per_request() -> None:
    """An open connection, even idle, freezes `litestream restore -f`: replica mode never keeps one."""
    assert from_env({"QF_API_DB": "x.db", "QF_API_REPLICA_URL": "s3://b/p"}).fresh_connections
    assert not from_env({"QF_API_DB": "x.db"}).fresh_connections
    assert from_env({"QF_API_DB": "x.db", "QF_API_FRESH_CONNECTIONS": "1"}).fresh_connections
