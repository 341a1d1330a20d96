#!/usr/bin/env bash
# Several Gatehouse instances on one PostgreSQL database (issue 17): installs
# Debian's postgresql, starts a throwaway cluster (initdb into a temp dir, run
# as the unprivileged user gatehouse-ci, loopback only, trust auth), and runs
#   - tests/postgres.rs          two instances on one database
#   - tests/postgres_outage.rs   the database restarted under load, kill -9
#                                of an instance mid-delivery
#   - signup, sessions, account, oidc_endpoints: existing black-box files on PostgreSQL
# with GATEHOUSE_TEST_PG_URL set, so these tests cannot silently skip.
# Idempotent; everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
as_pg() { (cd / && su -s /bin/sh gatehouse-ci -c "$(printf '%q ' "$@")"); }

# Called back by the outage test: stop or start the running cluster.
case "${1:-}" in
    --stop) as_pg "$3/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null; exit 0 ;;
    --start) as_pg "$3/pg_ctl" -D "$2/data" \
        -o "-p $4 -k $2 -c listen_addresses=127.0.0.1 -c max_connections=200" \
        -l "$2/log" -w -t 60 start >/dev/null; exit 0 ;;
esac

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        # Another job may hold the dpkg lock: wait and retry.
        if $SUDO apt-get install -y --no-install-recommends postgresql; then break; fi
        [ "$attempt" = 1 ] && $SUDO apt-get update || true
        sleep 10
    done
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
id gatehouse-ci >/dev/null 2>&1 || $SUDO useradd -r -M -s /usr/sbin/nologin gatehouse-ci

DIR=$(mktemp -d)
chmod 755 "$DIR"
chown gatehouse-ci "$DIR"
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
PG_OPTS="-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200"
as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -o "$PG_OPTS" -l "$DIR/log" -w -t 60 start >/dev/null

export GATEHOUSE_TEST_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
# For the outage test: how to stop and start this cluster.
export GATEHOUSE_TEST_PG_STOP="$PWD/.ci/postgres.sh --stop $DIR $PG_BIN"
export GATEHOUSE_TEST_PG_START="$PWD/.ci/postgres.sh --start $DIR $PG_BIN $PORT"

timeout 900 cargo test --locked --test postgres
timeout 900 cargo test --locked --test postgres_outage
GATEHOUSE_TEST_STORE=postgres timeout 1200 cargo test --locked \
    --test signup --test sessions --test account --test oidc_endpoints --test mfa
# Access rules (groups in the cached session) and the sign-up policy
# (invites) on the shared store (issue 20).
GATEHOUSE_TEST_STORE=postgres timeout 600 cargo test --locked \
    --test access_rules --test signup_policy
