#!/bin/sh
# Image entrypoint: hand the volume to the service user, then run the process group's command as it.
#
# - A Fly volume mounted at /data hides the image's /data, and a fresh volume's root belongs to root;
#   the worker (and Litestream, its parent) run as the unprivileged service user (uid 10001) and must be
#   able to create the database there. So, as root, chown the mount point and anything directly in it
#   not yet the user's, then drop privileges with setpriv (util-linux, in the base image) and exec the
#   command: it becomes the process, so Fly's signals reach it.
# - Started as non-root (e.g. `docker run --user`), it simply execs the command.
# - Fly passes the process group's command (fly.toml [processes]) as the arguments: it replaces CMD only.
# - QF_RUN_AS_UID and QF_OWNED_DIRS exist for the test that runs this script outside the image.
set -eu

uid="${QF_RUN_AS_UID:-10001}"
if [ "$(id -u)" = 0 ]; then
    for dir in ${QF_OWNED_DIRS:-/data /tmp/replica}; do
        mkdir -p "$dir"
        find "$dir" -maxdepth 1 ! -uid "$uid" -exec chown "$uid:$uid" {} +
    done
    export HOME=/home/quantumflow
    exec setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"
fi
exec "$@"
