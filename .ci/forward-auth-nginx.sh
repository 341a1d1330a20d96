#!/usr/bin/env bash
# Integration check: Debian's real nginx in front of Gatehouse with
# `auth_request` pointing at GET /api/v1/auth/verify (forward-auth). nginx
# answers the app itself from a second server block that echoes the identity
# headers it was given. Needs nginx (.ci/run installs it), curl, python3.
# Everything runs on loopback and is bounded in time; any failure exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v nginx >/dev/null || { echo "FAIL: nginx is not installed" >&2; exit 1; }
cargo build --locked --quiet
BIN=$PWD/target/debug/gatehouse

DIR=$(mktemp -d)
chmod 755 "$DIR"
GH_PID=
cleanup() {
    [ -n "$GH_PID" ] && kill "$GH_PID" 2>/dev/null || true
    [ -f "$DIR/nginx.pid" ] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
GH_PORT=$(free_port)
NGINX_PORT=$(free_port)
APP_PORT=$(free_port)

cat >"$DIR/gatehouse.toml" <<TOML
[server]
listen = "127.0.0.1:$GH_PORT"
workers = 1
trusted_proxies = ["127.0.0.1/32"]
[upstream]
url = "http://127.0.0.1:$APP_PORT"
[store]
path = "$DIR/data/gatehouse.redb"
[mail]
transport = "log"
[session]
cookie_name = "gh"
[admin]
listen = "off"
[[route]]
prefix = "/app/"
auth = "required"
[[route]]
prefix = "/public/"
auth = "none"
[[route]]
prefix = "/"
auth = "required"
TOML

cat >"$DIR/nginx.conf" <<NGINX
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log warn;
events { worker_connections 64; }
http {
    access_log $DIR/nginx-access.log;
    client_body_temp_path $DIR/tmp-body;
    proxy_temp_path $DIR/tmp-proxy;
    fastcgi_temp_path $DIR/tmp-fastcgi;
    uwsgi_temp_path $DIR/tmp-uwsgi;
    scgi_temp_path $DIR/tmp-scgi;

    upstream gatehouse { server 127.0.0.1:$GH_PORT; }

    # The protected application: echoes what nginx told it about the user.
    server {
        listen 127.0.0.1:$APP_PORT;
        default_type text/plain;
        location / {
            return 200 "app uri=\$request_uri user=\$http_x_auth_user_id email=\$http_x_auth_email\n";
        }
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;

        # Gatehouse's own API (sign-in, logout, ...) is proxied as is.
        location /api/v1/ {
            proxy_pass http://gatehouse;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }

        # Forward-auth subrequest: nginx names the original URI itself, so a
        # client-sent X-Original-URI / X-Forwarded-Uri never reaches Gatehouse.
        location = /_gatehouse_verify {
            internal;
            proxy_pass http://gatehouse/api/v1/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Forwarded-Uri \$request_uri;
        }

        location / {
            auth_request /_gatehouse_verify;
            auth_request_set \$auth_user \$upstream_http_x_auth_user_id;
            auth_request_set \$auth_email \$upstream_http_x_auth_email;
            proxy_set_header X-Auth-User-Id \$auth_user;
            proxy_set_header X-Auth-Email \$auth_email;
            proxy_pass http://127.0.0.1:$APP_PORT;
        }
    }
}
NGINX

"$BIN" serve --config "$DIR/gatehouse.toml" 2>"$DIR/gatehouse.log" &
GH_PID=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$DIR/gatehouse.log" && break
    kill -0 "$GH_PID" 2>/dev/null || { cat "$DIR/gatehouse.log"; echo "FAIL: gatehouse exited" >&2; exit 1; }
    sleep 0.1
done
grep -q "listening on" "$DIR/gatehouse.log" || { cat "$DIR/gatehouse.log"; echo "FAIL: gatehouse did not start" >&2; exit 1; }

nginx -p "$DIR" -c "$DIR/nginx.conf" -t -q
nginx -p "$DIR" -c "$DIR/nginx.conf"

"$BIN" user add ann@example.com --password ann-password-1 --config "$DIR/gatehouse.toml" >/dev/null

BASE="http://127.0.0.1:$NGINX_PORT"
JAR="$DIR/cookies"
FAILED=0
# check NAME EXPECTED_STATUS BODY_SUBSTRING CURL_ARGS...
check() {
    local name=$1 want=$2 needle=$3
    shift 3
    local out status body
    out=$(curl -sS --max-time 5 -o "$DIR/body" -w '%{http_code}' "$@") || out="curl-error"
    status=$out
    body=$(cat "$DIR/body" 2>/dev/null || true)
    if [ "$status" = "$want" ] && { [ -z "$needle" ] || grep -qF -- "$needle" <<<"$body"; }; then
        echo "ok   $name ($status)"
    else
        echo "FAIL $name: wanted $want ${needle:+with \"$needle\"}, got $status: $body"
        FAILED=1
    fi
}

check "protected page without a session is 401" 401 "" "$BASE/app/secret"
check "sign-in through nginx" 200 "Signed in" -c "$JAR" -H 'content-type: application/json' \
    -d '{"email":"ann@example.com","password":"ann-password-1"}' "$BASE/api/v1/user/signin"
check "protected page with the session reaches the app with identity" 200 \
    "user=1 email=ann@example.com" -b "$JAR" "$BASE/app/secret"
check "public route passes without a session" 200 "uri=/public/info user= " "$BASE/public/info"
check "spoofed original-URI headers cannot unlock a protected page" 401 "" \
    -H 'X-Original-URI: /public/x' -H 'X-Forwarded-Uri: /public/x' "$BASE/app/secret"
check "dot-segment detour through a public prefix is refused" 401 "" \
    --path-as-is "$BASE/public/../app/secret"
"$BIN" user disable ann@example.com --config "$DIR/gatehouse.toml" >/dev/null
check "a disabled user's session stops working at once" 401 "" -b "$JAR" "$BASE/app/secret"

if [ "$FAILED" != 0 ]; then
    echo "--- gatehouse log"; cat "$DIR/gatehouse.log"
    echo "--- nginx error log"; cat "$DIR/nginx-error.log" || true
    exit 1
fi
echo "nginx forward-auth: all checks passed"
