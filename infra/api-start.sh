#!/bin/sh
# Start script of the API process group (fly.toml: processes.api).
#
# - With a replica configured (QF_API_REPLICA_URL, or BUCKET_NAME + infra/litestream.yml as on Fly):
#   `litestream restore -f -follow-interval 1s` keeps a local copy current in the background; the copy's
#   path is cleaned first (copy, -wal, -shm, -txid) because follow mode cannot resume on an existing
#   file. We wait until the copy exists, then exec the API on it (a fresh read-only connection per
#   request: a long-lived one goes stale in follow mode and would block the follower).
# - Litestream runs with AWS_CA_BUNDLE removed: set globally on some machines, it breaks its S3 client.
# - Without a replica (local runs) the API simply serves the worker's own file, $QF_DB.
set -eu

PORT="${QF_API_PORT:-8080}"
HOST="${QF_API_HOST:-0.0.0.0}"
CONFIG="${LITESTREAM_CONFIG:-$(dirname "$0")/litestream.yml}"
WAIT_S="${QF_API_RESTORE_WAIT_S:-300}"

if [ -n "${QF_API_REPLICA_URL:-}" ] || [ -n "${BUCKET_NAME:-}" ]; then
    COPY="${QF_API_DB:-/tmp/replica/quantumflow.db}"
    mkdir -p "$(dirname "$COPY")"
    rm -f "$COPY" "$COPY-wal" "$COPY-shm" "$COPY-txid"
    if [ -n "${QF_API_REPLICA_URL:-}" ]; then
        SOURCE="$QF_API_REPLICA_URL"
        set -- "$QF_API_REPLICA_URL"
    else
        # The worker's config names the replica of $QF_DB; restore reads it from there.
        SOURCE="config:${QF_DB:?QF_DB must name the worker database in $CONFIG}"
        set -- -config "$CONFIG" "$QF_DB"
    fi
    echo "api-start: following $SOURCE into $COPY" >&2
    # The follower retries: on a fresh deployment the API may start before the worker's first upload
    # ("no matching backup files available"), and a follower that dies must not leave the copy frozen.
    follow() {
        child=""
        trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi; exit 0' TERM INT
        while :; do
            env -u AWS_CA_BUNDLE litestream restore -f -follow-interval 1s -o "$COPY" "$@" &
            child=$!
            wait "$child" || true
            echo "api-start: litestream restore stopped; retrying in 5s" >&2
            rm -f "$COPY" "$COPY-wal" "$COPY-shm" "$COPY-txid"
            sleep 5 &
            child=$!
            wait "$child" || true
        done
    }
    follow "$@" &
    FOLLOWER=$!
    waited=0
    while [ ! -s "$COPY" ]; do
        if [ "$waited" -ge $((WAIT_S * 2)) ]; then
            echo "api-start: no copy at $COPY after ${WAIT_S}s" >&2
            kill -TERM "$FOLLOWER" 2>/dev/null || true
            exit 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    export QF_API_REPLICA_URL="$SOURCE"
    DB="$COPY"
else
    DB="${QF_DB:-quantumflow.db}"
    echo "api-start: no replica configured; serving the worker's file $DB" >&2
fi

if [ -z "${FOLLOWER:-}" ]; then
    exec python -m api --db "$DB" --host "$HOST" --port "$PORT"
fi
# With a follower, stay the parent of both so Fly's SIGTERM stops the follower too (no orphan).
python -m api --db "$DB" --host "$HOST" --port "$PORT" &
API=$!
trap 'kill -TERM "$API" "$FOLLOWER" 2>/dev/null || true' TERM INT
status=0
while kill -0 "$API" 2>/dev/null; do
    status=0
    wait "$API" || status=$?  # a signal interrupts the wait: loop until the API has really exited
done
kill -TERM "$FOLLOWER" 2>/dev/null || true
wait "$FOLLOWER" 2>/dev/null || true
exit "$status"
