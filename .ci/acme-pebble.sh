#!/usr/bin/env bash
# Automatic HTTPS against Debian's pebble (the RFC 8555 ACME test CA) on
# loopback: TLS-ALPN-01 and HTTP-01 issuance, restart without re-ordering,
# renewal under load with open connections, CA failures, two instances on
# one store directory (see .ci/acme_pebble.py). Installs pebble and openssl
# if missing (idempotent; waits for the dpkg lock). Fails loudly, never
# skips. Takes about 3 minutes, mostly waiting for 60-second certificates.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
apt_install() {
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if $SUDO apt-get install -y --no-install-recommends "$@"; then return 0; fi
        echo "apt-get busy or failed (attempt $attempt); retrying in 15s" >&2
        sleep 15
        $SUDO apt-get update || true
    done
    return 1
}
need=()
command -v pebble >/dev/null || need+=(pebble)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update || true
    apt_install "${need[@]}"
fi
command -v pebble >/dev/null || { echo "FAIL: pebble is not installed" >&2; exit 1; }

cargo build --locked --quiet --bin gatehouse
GATEHOUSE_BIN="$PWD/target/debug/gatehouse" timeout 600 python3 .ci/acme_pebble.py
