#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, shared by .ci/postgres.sh and
# bench/run --postgres. Source it, then:
#   pg_cluster_install            Debian's postgresql (retries on a busy dpkg lock)
#   pg_cluster_start DIR PORT     initdb into DIR/data (as the unprivileged user
#                                 gatehouse-ci, trust auth), a test CA and a
#                                 server certificate naming only "localhost" in
#                                 DIR/tls (ssl = on; plain connections stay
#                                 allowed), and start it on 127.0.0.1:PORT
#   pg_cluster_restart DIR PORT   start an initialised cluster again
#   pg_cluster_stop DIR [MODE]    stop it (fast; immediate for cleanup)
# Sets PG_BIN. The superuser URL is postgres://postgres@127.0.0.1:PORT/postgres;
# the CA that verifies the server is DIR/tls/ca.pem.

SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
as_pg() { (cd / && su -s /bin/sh gatehouse-ci -c "$(printf '%q ' "$@")"); }

pg_find_bin() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
}

pg_cluster_install() {
    pg_find_bin
    if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
        for attempt in 1 2 3 4 5 6 7 8 9 10; do
            # Another job may hold the dpkg lock: wait and retry.
            if $SUDO apt-get install -y --no-install-recommends postgresql; then break; fi
            [ "$attempt" = 1 ] && $SUDO apt-get update || true
            sleep 10
        done
        pg_find_bin
    fi
    id gatehouse-ci >/dev/null 2>&1 || $SUDO useradd -r -M -s /usr/sbin/nologin gatehouse-ci
}

pg_cluster_options() {
    printf '%s' "-p $2 -k $1 -c listen_addresses=127.0.0.1 -c max_connections=300 \
-c ssl=on -c ssl_cert_file=$1/tls/server.pem -c ssl_key_file=$1/tls/server.key"
}

pg_cluster_tls() {
    local tls=$1/tls
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Gatehouse test DB CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
    chown -R gatehouse-ci "$tls"
    chmod 600 "$tls/server.key"
    chmod 644 "$tls/ca.pem"
}

pg_cluster_start() {
    chmod 755 "$1"
    chown gatehouse-ci "$1"
    pg_cluster_tls "$1"
    as_pg "$PG_BIN/initdb" -D "$1/data" -U postgres --auth=trust -E UTF8 >/dev/null
    pg_cluster_restart "$1" "$2"
}

pg_cluster_restart() {
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -o "$(pg_cluster_options "$1" "$2")" \
        -l "$1/log" -w -t 60 start >/dev/null
}

pg_cluster_stop() {
    as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m "${2:-fast}" -w stop >/dev/null
}
