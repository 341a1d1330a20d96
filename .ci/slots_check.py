#!/usr/bin/env python3
"""Slot exhaustion and early answers at scale, against a running Gatehouse
(TLS, self-signed) started by .ci/slots.sh with short deadlines:
header_read_timeout = keep_alive_timeout = body_read_timeout = 2s.

Usage: slots_check.py PORT PID

1. Early answers: Python's http.client writes the body in a separate write
   after the head; 200 oversized sign-ins on keep-alive connections must all
   get 413 and the connection must serve the next request (or say
   Connection: close). Then curl --http2 and --http1.1 loops.
2. Slot holding: 2000 TLS connections negotiating h2 and sending nothing
   from 127.0.0.1, 100 HTTP/2 connections that made one request and then
   only PING from 127.0.0.3, 50 sign-in bodies trickled from 127.0.0.4 —
   while 127.0.0.2 keeps making requests. Every held connection must be
   closed within its deadline (+ slack) and 127.0.0.2 must be served.
Standard library only (plus the curl binary). Exits 1 on any failure.
"""
import concurrent.futures
import http.client
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

PORT = int(sys.argv[1])
PID = int(sys.argv[2])
HOST = "127.0.0.1"
FAILURES = []


def fail(msg):
    print("FAIL:", msg, flush=True)
    FAILURES.append(msg)


def ctx(alpn):
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    c.set_alpn_protocols(alpn)
    return c


def rss_mib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return -1


def tls_socket(source, alpn, timeout=10):
    raw = socket.create_connection((HOST, PORT), timeout=timeout, source_address=(source, 0))
    return ctx(alpn).wrap_socket(raw, server_hostname="localhost")


# ---------------------------------------------------------------- 1. early
BIG = b'{"email":"' + b"a" * 100_000 + b'"}'


def early_answers_http_client(rounds=200):
    conn = None
    bad = 0
    for i in range(rounds):
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(HOST, PORT, context=ctx(["http/1.1"]), timeout=10)
            conn.putrequest("POST", "/api/v1/user/signin")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(BIG)))
            conn.endheaders()
            conn.send(BIG)  # a separate write after the head
            r = conn.getresponse()
            body = r.read()
            if r.status != 413 or b"too large" not in body:
                bad += 1
                print(f"  round {i}: {r.status} {body[:80]!r}")
            if (r.getheader("connection") or "").lower() == "close":
                conn.close()
                conn = None
                continue
            conn.request("GET", "/api/v1/auth-check")
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                bad += 1
                print(f"  round {i}: next request got {r.status}")
        except Exception as e:  # noqa: BLE001 - every failure counts
            bad += 1
            print(f"  round {i}: {type(e).__name__}: {e}")
            conn = None
    print(f"http.client split-write 413 + next request: {rounds - bad}/{rounds} ok", flush=True)
    if bad:
        fail(f"http.client: {bad} of {rounds} early answers lost or connection unusable")


def early_answers_curl(proto, rounds):
    path = "/tmp/gatehouse-slots-big.json"
    with open(path, "wb") as f:
        f.write(BIG)
    codes = {}
    for _ in range(rounds):
        out = subprocess.run(
            ["curl", "-sk", proto, "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
             "-H", "content-type: application/json", "--data-binary", f"@{path}",
             f"https://{HOST}:{PORT}/api/v1/user/signin"],
            capture_output=True, text=True, check=False,
        ).stdout
        codes[out] = codes.get(out, 0) + 1
    print(f"curl {proto} oversized sign-in x{rounds}: {codes}", flush=True)
    if codes != {"413": rounds}:
        fail(f"curl {proto}: not every answer was a readable 413: {codes}")


# ---------------------------------------------------------------- 2. slots
def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# HPACK: :method GET, :scheme https, :path /api/v1/auth-check (literal),
# :authority localhost (literal).
PATH = b"/api/v1/auth-check"
HEADERS_BLOCK = (b"\x82\x87" + b"\x04" + bytes([len(PATH)]) + PATH
                 + b"\x01" + bytes([len(b"localhost")]) + b"localhost")


def closed_by(sock, deadline):
    """True if the peer closes the connection before `deadline` (monotonic)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except (ssl.SSLError, OSError):
            return True
        if not data:
            return True


def pinging_h2(source):
    s = tls_socket(source, ["h2"])
    s.sendall(PREFACE + h2_frame(4, 0, 0) + h2_frame(1, 0x5, 1, HEADERS_BLOCK))
    return s


def hold_and_measure():
    rss_before = rss_mib()
    held_b, held_c = [], []
    stop = threading.Event()
    latencies, errors = [], []

    def other_address():
        while not stop.is_set():
            t = time.monotonic()
            try:
                c = http.client.HTTPSConnection(HOST, PORT, context=ctx(["http/1.1"]), timeout=10,
                                                source_address=("127.0.0.2", 0))
                c.request("GET", "/api/v1/auth-check")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200:
                    errors.append(r.status)
                latencies.append(time.monotonic() - t)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
            time.sleep(0.2)

    prober = threading.Thread(target=other_address)
    prober.start()
    started = time.monotonic()
    # (a) up to 2000 silent h2 connections from one address (16 at a time,
    # at most 90 s: a debug build's TLS handshakes are slow).
    budget = started + 90

    def open_silent(_):
        if time.monotonic() > budget:
            return None
        try:
            return tls_socket("127.0.0.1", ["h2"])
        except OSError:
            return None  # closed by the per-address cap or eviction: fine

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        held_a = [s for s in pool.map(open_silent, range(2000)) if s is not None]
    tried = 2000 if time.monotonic() <= budget else "budget-limited"
    print(f"(a) {len(held_a)} silent h2 connections completed TLS ({tried} attempts) "
          f"in {time.monotonic() - started:.1f}s", flush=True)
    if len(held_a) < 300:
        fail("too few silent connections to exceed the per-address cap (256)")
    # (b) 100 h2 connections that made one request, then only PING.
    for _ in range(100):
        held_b.append(pinging_h2("127.0.0.3"))
    # (c) 50 trickled sign-in bodies.
    for _ in range(50):
        s = tls_socket("127.0.0.4", ["http/1.1"])
        s.sendall(b"POST /api/v1/user/signin HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{")
        held_c.append(s)
    rss_held = rss_mib()

    def pinger():
        while not stop.is_set():
            for s in held_b:
                try:
                    s.sendall(h2_frame(6, 0, 0, b"12345678"))
                except OSError:
                    pass
            for s in held_c:
                try:
                    s.sendall(b" ")
                except OSError:
                    pass
            time.sleep(0.5)

    pinging = threading.Thread(target=pinger)
    pinging.start()
    # Deadlines are 2 s; allow 10 s of slack for a loaded CI machine.
    deadline = time.monotonic() + 12
    open_a = sum(1 for s in held_a if not closed_by(s, deadline))
    open_b = sum(1 for s in held_b if not closed_by(s, deadline))
    open_c = sum(1 for s in held_c if not closed_by(s, deadline))
    stop.set()
    pinging.join()
    prober.join()
    rss_after = rss_mib()
    print(f"still open after their deadlines: silent h2 {open_a}/{len(held_a)}, "
          f"pinging h2 {open_b}/{len(held_b)}, trickled bodies {open_c}/{len(held_c)}", flush=True)
    print(f"other address: {len(latencies)} requests, {len(errors)} errors, "
          f"max latency {max(latencies, default=0):.3f}s", flush=True)
    print(f"gatehouse RSS: {rss_before:.1f} MiB before, {rss_held:.1f} MiB while held, "
          f"{rss_after:.1f} MiB after", flush=True)
    if open_a or open_b or open_c:
        fail("connections kept their slots past their deadlines")
    if errors or not latencies:
        fail(f"the other address was not served: {errors[:5]}")
    if max(latencies, default=0) > 5:
        fail("the other address waited more than 5 s")


early_answers_http_client()
early_answers_curl("--http2", 100)
early_answers_curl("--http1.1", 50)
hold_and_measure()
if FAILURES:
    sys.exit(1)
print("ok")
