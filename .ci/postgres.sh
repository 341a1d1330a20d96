#!/usr/bin/env bash
# Several Gatehouse instances on one PostgreSQL database (issue 17): installs
# Debian's postgresql, starts a throwaway cluster (.ci/pg-cluster.sh: initdb
# into a temp dir, run as the unprivileged user gatehouse-ci, loopback only,
# trust auth, ssl = on with a test CA), and runs the WHOLE `cargo test` with
#   GATEHOUSE_TEST_STORE=postgres  every server the harness starts gets a
#                                  fresh database of its own on the cluster
#                                  (dropped after), so the black-box suite
#                                  runs on PostgreSQL; redb-only tests say
#                                  so ("skipped on PostgreSQL: ...")
#   GATEHOUSE_TEST_PG_URL          tests/postgres.rs (two instances on one
#                                  database), tests/postgres_outage.rs (the
#                                  database restarted under load, kill -9 of
#                                  an instance mid-delivery) and
#                                  tests/postgres_tls.rs (verify-full), which
#                                  cannot silently skip.
# About as long as the plain `cargo test` (6-8 min on 2 cores after the build).
# Idempotent; everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/pg-cluster.sh

# Called back by the outage test: stop or start the running cluster.
case "${1:-}" in
    --stop) pg_find_bin; pg_cluster_stop "$2"; exit 0 ;;
    --start) pg_find_bin; pg_cluster_restart "$2" "$3"; exit 0 ;;
esac

pg_cluster_install
DIR=$(mktemp -d)
cleanup() {
    pg_cluster_stop "$DIR" immediate 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pg_cluster_start "$DIR" "$PORT"

export GATEHOUSE_TEST_PG_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
export GATEHOUSE_TEST_PG_TLS_CA="$DIR/tls/ca.pem"
# For the outage test: how to stop and start this cluster.
export GATEHOUSE_TEST_PG_STOP="$PWD/.ci/postgres.sh --stop $DIR"
export GATEHOUSE_TEST_PG_START="$PWD/.ci/postgres.sh --start $DIR $PORT"

GATEHOUSE_TEST_STORE=postgres timeout 1700 cargo test --locked 2>&1 | tee "$DIR/test.log"
# Redb-only tests print why they were skipped; count them so a growing
# number shows.
echo "== tests skipped on PostgreSQL (redb-only): $(grep -c 'skipped on PostgreSQL' "$DIR/test.log" || true)"
grep 'skipped on PostgreSQL' "$DIR/test.log" | sort | uniq -c || true
