#!/usr/bin/env python3
"""Issue 18 §2 against a real CGI/WSGI-style backend: Python's wsgiref maps
header names to HTTP_* variables with '-' and '_' merged, so
`X_Auth_User_Id: 999` next to Gatehouse's `X-Auth-User-Id: 1` would read as
HTTP_X_AUTH_USER_ID = "1,999" (or "999" for a signed-out user). Runs the
real Gatehouse binary (argv[1]) in both `underscores_in_headers` modes in
front of a wsgiref app that records its environ, and checks that the app
only ever sees Gatehouse's identity. Standard library only; loopback only.
"""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

BIN = sys.argv[1]
SEEN = []


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    SEEN.append({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


upstream = make_server("127.0.0.1", 0, app, handler_class=Quiet)
threading.Thread(target=upstream.serve_forever, daemon=True).start()
UP = upstream.server_address[1]
FORGED = [("X_Auth_User_Id", "999"), ("X_Auth_Email", "evil@example.com"),
          ("X-Forwarded_For", "6.6.6.6"), ("X_Real_IP", "6.6.6.6"),
          ("X-Auth_User-Id", "998")]
failures = []


def request(port, method, path, headers=(), body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in headers:
        c.putheader(k, v)
    if body is not None:
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(len(body)))
    c.endheaders()
    if body is not None:
        c.send(body)
    r = c.getresponse()
    data = r.read()
    cookies = r.headers.get_all("Set-Cookie") or []
    c.close()
    return r.status, data, cookies


def check(mode):
    d = tempfile.mkdtemp()
    port = free_port()
    with open(f"{d}/g.toml", "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{port}"
underscores_in_headers = "{mode}"
[upstream]
url = "http://127.0.0.1:{UP}"
[store]
path = "{d}/data/g.redb"
[mail]
transport = "file"
dir = "{d}/mail"
[session]
cookie_name = "gh"
[admin]
listen = "off"
socket = "{d}/admin.sock"
""")
    log = open(f"{d}/log", "w")
    proc = subprocess.Popen([BIN, "serve", "--config", f"{d}/g.toml"], stderr=log, stdout=log)
    try:
        for _ in range(100):
            if "listening on" in open(f"{d}/log").read():
                break
            time.sleep(0.1)
        email = "wsgi@example.com"
        status, _, _ = request(port, "POST", "/api/v1/user/signup/send-otp",
                               body=json.dumps({"email": email}).encode())
        assert status == 200, status
        code = None
        for _ in range(100):
            files = os.listdir(f"{d}/mail") if os.path.isdir(f"{d}/mail") else []
            if files:
                text = open(f"{d}/mail/{files[0]}").read().split("\n\n", 1)[-1]
                code = re.search(r"\b\d{6}\b", text).group(0)
                break
            time.sleep(0.1)
        status, _, cookies = request(port, "POST", "/api/v1/user/signup/verify", body=json.dumps(
            {"email": email, "code": code, "password": "password1"}).encode())
        assert status == 200, status
        cookie = next(c.split(";")[0] for c in cookies if c.startswith("gh="))
        # Gatehouse's own word, without forged headers.
        request(port, "GET", "/api/v2/me", [("Cookie", cookie)])
        real = SEEN[-1].get("HTTP_X_AUTH_USER_ID")
        # Signed in, required route; then signed out, optional route.
        request(port, "GET", "/api/v2/me", [("Cookie", cookie)] + FORGED)
        signed_in = SEEN[-1]
        request(port, "GET", "/page", FORGED)
        signed_out = SEEN[-1]
        print(f"[{mode}] signed in: HTTP_X_AUTH_USER_ID={signed_in.get('HTTP_X_AUTH_USER_ID')!r} "
              f"(real {real!r}); signed out: {signed_out.get('HTTP_X_AUTH_USER_ID')!r}; "
              f"HTTP_X_FORWARDED_FOR={signed_out.get('HTTP_X_FORWARDED_FOR')!r}")
        if not real or signed_in.get("HTTP_X_AUTH_USER_ID") != real:
            failures.append(f"{mode}: signed-in identity spoofed: {signed_in}")
        if "HTTP_X_AUTH_USER_ID" in signed_out or "HTTP_X_AUTH_EMAIL" in signed_out:
            failures.append(f"{mode}: signed-out identity spoofed: {signed_out}")
        for env in (signed_in, signed_out):
            if env.get("HTTP_X_FORWARDED_FOR") != "127.0.0.1" or env.get("HTTP_X_REAL_IP") != "127.0.0.1":
                failures.append(f"{mode}: forwarding headers spoofed: {env}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


for mode in ("drop", "pass"):
    check(mode)
if failures:
    for f in failures:
        print("FAIL:", f)
    sys.exit(1)
print("ok")
