#!/usr/bin/env bash
# Issue 18 / issue 10 item 3 at scale: connection-slot holding (silent h2,
# PINGing h2, trickled bodies, thousands of idle connections from one
# address while another is served) and early answers (413 while the body is
# still being written) looped with Python's http.client and Debian's curl
# over HTTP/2 and HTTP/1.1; then underscore header spellings against a real
# WSGI backend (wsgiref). Loopback only; bounded (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v curl >/dev/null || { echo "FAIL: curl is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 is not installed" >&2; exit 1; }
cargo build --locked --quiet
BIN=$PWD/target/debug/gatehouse

DIR=$(mktemp -d)
GH_PID=
cleanup() {
    [ -n "$GH_PID" ] && kill "$GH_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$DIR/gatehouse.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"
header_read_timeout = "2s"
keep_alive_timeout = "2s"
body_read_timeout = "2s"
[tls]
self_signed = true
[upstream]
url = "http://127.0.0.1:9"
[store]
path = "$DIR/data/gatehouse.redb"
[mail]
transport = "log"
[admin]
listen = "off"
socket = "$DIR/admin.sock"
TOML

"$BIN" serve --config "$DIR/gatehouse.toml" >"$DIR/log" 2>&1 &
GH_PID=$!
for _ in $(seq 100); do
    grep -q "listening on" "$DIR/log" && break
    sleep 0.1
done
grep -q "listening on" "$DIR/log" || { cat "$DIR/log"; echo "FAIL: gatehouse did not start" >&2; exit 1; }

python3 .ci/slots_check.py "$PORT" "$GH_PID"

# Underscore spellings against a real WSGI backend (wsgiref merges - and _).
python3 .ci/underscores_wsgi.py "$BIN"
