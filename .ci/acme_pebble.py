#!/usr/bin/env python3
"""Automatic HTTPS against Debian's pebble (an RFC 8555 ACME test CA) on
loopback, with the real gatehouse binary ($GATEHOUSE_BIN):

1. first issuance with TLS-ALPN-01 (pebble validates on Gatehouse's TLS
   listener): the served chain verifies against pebble's root for
   "localhost"; files are 0600; metrics say issued 1;
2. a restart reuses the stored certificate: pebble records no new order;
3. renewal under load (pebble issues 60-second certificates): new
   connections get the new certificate, an open connection keeps working,
   no request fails;
4. CA failures with a certificate in service: pebble rejecting every nonce,
   then pebble gone: ERROR in the log, failures in the metrics, the working
   certificate still served; pebble back (without the stored account): a
   new registration and a new certificate;
5. first issuance with HTTP-01 on http_listen, and 308 from plain HTTP;
6. two instances sharing one store directory: one order between them, the
   one not reachable by the CA orders and the other answers the challenge
   from the shared directory, both serve the same certificate;
7. no certificate yet and the CA unreachable: handshakes are refused,
   /readyz says 503 "waiting", the log says why.

Needs: pebble, openssl, python3 (stdlib only). Fails loudly; never skips.
"""

import atexit
import fcntl
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = os.environ.get("GATEHOUSE_BIN", "target/debug/gatehouse")
PEBBLE = shutil.which("pebble")
WORK = tempfile.mkdtemp(prefix="gh-acme-")
CERT_SECONDS = 60
PROCS = []


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()


# Whatever ends the run (a failed check, an exception, Ctrl-C), no pebble or
# gatehouse is left behind.
atexit.register(stop_all)


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    for p in PROCS:
        if p.poll() is None:
            p.kill()
    print(f"(work directory kept: {WORK})", file=sys.stderr)
    sys.exit(1)


def check(cond, message):
    if not cond:
        fail(message)
    print(f"  ok: {message}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    fail(f"timed out after {timeout}s waiting for {what}")


# --- pebble -----------------------------------------------------------------

PEBBLE_PORT, PEBBLE_MGMT = free_port(), free_port()
TLS_PORT, HTTP_PORT = free_port(), free_port()  # where pebble validates


def make_pebble_tls():
    """A CA and a localhost certificate for pebble's own HTTPS."""
    d = os.path.join(WORK, "pebble-tls")
    os.makedirs(d)
    run = lambda *args: subprocess.run(args, cwd=d, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=gatehouse test CA for pebble")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


class Pebble:
    def __init__(self, tls_dir):
        self.tls_dir = tls_dir
        self.config = os.path.join(WORK, "pebble.json")
        with open(self.config, "w") as f:
            json.dump({"pebble": {
                "listenAddress": f"127.0.0.1:{PEBBLE_PORT}",
                "managementListenAddress": f"127.0.0.1:{PEBBLE_MGMT}",
                "certificate": os.path.join(tls_dir, "cert.pem"),
                "privateKey": os.path.join(tls_dir, "key.pem"),
                "httpPort": HTTP_PORT,
                "tlsPort": TLS_PORT,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": CERT_SECONDS,
            }}, f)
        self.proc = None
        self.runs = 0

    def start(self, **env):
        self.runs += 1
        self.log = os.path.join(WORK, f"pebble-{self.runs}.log")
        full_env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        full_env.update(env)
        self.proc = subprocess.Popen([PEBBLE, "-config", self.config],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     env=full_env)
        PROCS.append(self.proc)
        wait_for("pebble to listen", lambda: "ACME directory available" in self.text(), 20)
        ctx = ssl.create_default_context(cafile=os.path.join(self.tls_dir, "ca.pem"))
        self.root = urllib.request.urlopen(
            f"https://127.0.0.1:{PEBBLE_MGMT}/roots/0", context=ctx, timeout=10).read().decode()
        self.root_file = os.path.join(WORK, f"pebble-root-{self.runs}.pem")
        with open(self.root_file, "w") as f:
            f.write(self.root)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def text(self):
        with open(self.log) as f:
            return f.read()

    def orders(self):
        return self.text().count("Added order")


# --- a recording upstream ---------------------------------------------------

class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"upstream ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


UPSTREAM_PORT = free_port()
upstream = http.server.ThreadingHTTPServer(("127.0.0.1", UPSTREAM_PORT), Upstream)
upstream.daemon_threads = True
threading.Thread(target=upstream.serve_forever, daemon=True).start()


# --- gatehouse ----------------------------------------------------------------

class Gatehouse:
    def __init__(self, name, data_dir, tls_port, challenge="tls-alpn-01", http_listen=None,
                 directory=None, renew_before="20s", store_name="gatehouse.redb",
                 ca_file=None):
        self.name = name
        self.data_dir = data_dir
        self.tls_port = tls_port
        self.admin_port = free_port()
        self.config = os.path.join(WORK, f"{name}.toml")
        self.runs = 0
        self.proc = None
        self.write_config(challenge, http_listen, directory, renew_before, store_name, ca_file)

    def write_config(self, challenge, http_listen, directory, renew_before, store_name, ca_file):
        os.makedirs(self.data_dir, exist_ok=True)
        lines = [
            "[server]", f'listen = "127.0.0.1:{self.tls_port}"',
            "[upstream]", f'url = "http://127.0.0.1:{UPSTREAM_PORT}"',
            "[store]", f'path = "{self.data_dir}/{store_name}"',
            "[admin]", f'listen = "127.0.0.1:{self.admin_port}"',
            f'socket = "{WORK}/{self.name}.sock"',
            "[log]", 'format = "json"', 'level = "info"',
            "[tls.acme]", 'domains = ["localhost"]', 'email = "ops@example.com"',
            f'directory = "{directory or f"https://127.0.0.1:{PEBBLE_PORT}/dir"}"',
            f'challenge = "{challenge}"',
            f'ca_file = "{ca_file or os.path.join(TLS_DIR, "ca.pem")}"',
            f'renew_before = "{renew_before}"',
        ]
        if http_listen:
            lines.append(f'http_listen = "127.0.0.1:{http_listen}"')
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def set(self, key, value):
        text = open(self.config).read()
        text = re.sub(rf'^{key} = .*$', f'{key} = "{value}"', text, flags=re.M)
        open(self.config, "w").write(text)

    def start(self):
        self.runs += 1
        self.log = os.path.join(WORK, f"{self.name}-{self.runs}.log")
        self.proc = subprocess.Popen([BIN, "serve", "--config", self.config],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        PROCS.append(self.proc)
        wait_for(f"{self.name} to listen", lambda: self.has("listening on https://"), 30)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail(f"{self.name} did not stop on SIGTERM")
        if self.proc.returncode != 0:
            fail(f"{self.name} exited with {self.proc.returncode}")

    def events(self):
        out = []
        with open(self.log) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def messages(self, needle, level=None):
        return [e for e in self.events()
                if needle in e.get("message", "") and (level is None or e.get("level") == level)]

    def has(self, needle):
        return len(self.messages(needle)) > 0

    def admin(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                        timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name):
        _, text = self.admin("/metrics")
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        if not m:
            fail(f"metric {name} missing from {self.name}")
        return float(m.group(1))

    def wait_ready(self, timeout=60):
        wait_for(f"{self.name} /readyz 200", lambda: self.admin("/readyz")[0] == 200, timeout)


def connect(port, root_file):
    """A verified TLS connection to 127.0.0.1:port for the name localhost."""
    ctx = ssl.create_default_context(cafile=root_file)
    ctx.set_alpn_protocols(["http/1.1"])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def served(port, root_file):
    """(sha256 of the served leaf, its notAfter as Unix time, its SAN names)."""
    with connect(port, root_file) as tls:
        der = tls.getpeercert(binary_form=True)
        info = tls.getpeercert()
    names = [v for (k, v) in info.get("subjectAltName", ()) if k == "DNS"]
    return hashlib.sha256(der).hexdigest(), ssl.cert_time_to_seconds(info["notAfter"]), names


class Conn(http.client.HTTPSConnection):
    """Keep-alive HTTPS to 127.0.0.1, verifying the name localhost."""

    def __init__(self, port, root_file):
        super().__init__("localhost", port, timeout=10)
        self.root_file = root_file

    def connect(self):
        self.sock = connect(self.port, self.root_file)

    def get(self, path="/"):
        self.request("GET", path)
        r = self.getresponse()
        return r.status, r.read()


def mode(path):
    return os.stat(path).st_mode & 0o777


# --- the scenarios -------------------------------------------------------------

TLS_DIR = make_pebble_tls()
pebble = Pebble(TLS_DIR)
pebble.start()

print("== 1. first issuance over TLS-ALPN-01")
a = Gatehouse("alpn", os.path.join(WORK, "alpn"), TLS_PORT)
a.start()
check(a.has("ordering a certificate") and a.messages("ordering a certificate")[0].get(
    "reason") == "no certificate yet", "the log says what it waits for")
a.wait_ready()
fp1, not_after1, names = served(TLS_PORT, pebble.root_file)
check(names == ["localhost"], f"the served certificate names localhost ({names})")
check(not_after1 > time.time(), "and chains to pebble's root (verified, not expired)")
check(pebble.orders() == 1, "pebble saw exactly one order")
check(a.metric("gatehouse_acme_certificates_issued_total") == 1, "metrics: one certificate issued")
check(abs(a.metric("gatehouse_tls_certificate_expiry_seconds") - not_after1) <= 1,
      "metrics: gatehouse_tls_certificate_expiry_seconds is the certificate's notAfter")
acme_dir = os.path.join(a.data_dir, "acme")
accounts = [f for f in os.listdir(acme_dir) if f.startswith("account-")]
check(mode(os.path.join(acme_dir, "certificate.pem")) == 0o600 and len(accounts) == 1
      and mode(os.path.join(acme_dir, accounts[0])) == 0o600,
      "certificate and account key are stored with mode 0600")
status, body = Conn(TLS_PORT, pebble.root_file).get("/")
check(status == 200 and body == b"upstream ok", "HTTPS requests reach the upstream")

print("== 2. a restart reuses the certificate")
a.stop()
a.start()
a.wait_ready(timeout=10)
check(served(TLS_PORT, pebble.root_file)[0] == fp1, "the same certificate is served")
check(pebble.orders() == 1, "pebble saw no new order")
check(not a.has("ACME order created") and a.has("reusing the stored ACME certificate"),
      "the log shows the stored certificate, no order")
check(a.metric("gatehouse_acme_certificates_issued_total") == 0, "metrics: nothing issued")

print("== 3. renewal under load, open connections survive")
kept = Conn(TLS_PORT, pebble.root_file)
status, _ = kept.get("/")
check(status == 200, "a keep-alive connection is open")
kept_fp = hashlib.sha256(kept.sock.getpeercert(binary_form=True)).hexdigest()
stop_load = threading.Event()
results = {"ok": 0, "failed": []}
lock = threading.Lock()


def load():
    while not stop_load.is_set():
        try:
            status, _ = Conn(TLS_PORT, pebble.root_file).get("/")
            with lock:
                if status == 200:
                    results["ok"] += 1
                else:
                    results["failed"].append(status)
        except Exception as e:  # noqa: BLE001 - any failure counts
            with lock:
                results["failed"].append(repr(e))
        time.sleep(0.02)


def keep_busy():
    # An idle keep-alive connection is closed after server.header_read_timeout;
    # this one stays in use across the renewal.
    while not stop_load.is_set():
        try:
            status, _ = kept.get("/")
            if status != 200:
                results["failed"].append(f"kept connection: {status}")
        except Exception as e:  # noqa: BLE001
            results["failed"].append(f"kept connection: {e!r}")
            return
        time.sleep(1)


threads = [threading.Thread(target=load) for _ in range(4)] + [threading.Thread(target=keep_busy)]
for t in threads:
    t.start()
wait_for("the renewal", lambda: a.has("new ACME certificate in service"), CERT_SECONDS + 30)
time.sleep(1)
stop_load.set()
for t in threads:
    t.join()
fp2, not_after2, _ = served(TLS_PORT, pebble.root_file)
check(fp2 != fp1 and not_after2 > not_after1, "new connections get the renewed certificate")
status, _ = kept.get("/")
check(status == 200, "the connection opened before the renewal still answers")
check(hashlib.sha256(kept.sock.getpeercert(binary_form=True)).hexdigest() == kept_fp,
      "on the certificate it negotiated")
check(results["ok"] > 20 and not results["failed"],
      f"{results['ok']} requests during the renewal, none failed ({results['failed'][:3]})")
check(pebble.orders() == 2, "pebble saw one renewal order")
check(a.metric("gatehouse_tls_certificate_expiry_seconds") == not_after2,
      "metrics: the expiry follows the new certificate")
kept.close()

print("== 4. CA failures keep the working certificate in service")
a.stop()
old_root = pebble.root_file
pebble.stop()
pebble.start(PEBBLE_WFE_NONCEREJECT="100")
# Renew when half the lifetime is left, so the order comes due within 30 s.
a.set("renew_before", "1d")
a.start()
a.wait_ready(timeout=10)
check(served(TLS_PORT, old_root)[0] == fp2, "the stored certificate is served at start")
failed = wait_for("the failed renewal", lambda: a.messages("ACME renewal failed", "ERROR"),
                  CERT_SECONDS)
check("badNonce" in failed[0].get("error", ""), f"ERROR log names the CA's refusal: "
      f"{failed[0].get('error', '')[:120]}")
check(a.metric("gatehouse_acme_order_failures_total") >= 1, "metrics count the failure")
check(served(TLS_PORT, old_root)[0] == fp2, "the working certificate is still served")
check(a.admin("/readyz")[0] == 200, "and the instance stays ready")
pebble.stop()
unreachable = wait_for(
    "a failure with the CA gone",
    lambda: [m for m in a.messages("ACME renewal failed", "ERROR")
             if "refused" in m.get("error", "").lower()], 30)
check(True, f"with the CA gone: {unreachable[0]['error'][:120]}")
check(a.metric("gatehouse_acme_order_failures_total") >= 2, "metrics count both failures")
check(served(TLS_PORT, old_root)[0] == fp2, "the working certificate is still served")
a.stop()
pebble.start()
# The restarted pebble has forgotten the account Gatehouse stored.
a.start()
wait_for("the order after the CA came back", lambda: a.has("ACME certificate issued"), 60)
check(a.has("does not know the stored account"),
      "a CA that lost the account gets a new registration")
check(served(TLS_PORT, pebble.root_file)[0] != fp2,
      "and the new certificate chains to the new CA's root")
a.stop()

print("== 5. first issuance over HTTP-01, plain HTTP redirected")
b_port = free_port()
orders_before = pebble.orders()
b = Gatehouse("http01", os.path.join(WORK, "http01"), b_port, challenge="http-01",
              http_listen=HTTP_PORT)
b.start()
b.wait_ready()
fp_b, _, names = served(b_port, pebble.root_file)
check(names == ["localhost"], "the HTTP-01 certificate names localhost and verifies")
check(pebble.orders() - orders_before == 1, "pebble saw one order")
plain = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
plain.request("POST", "/api/v2/tasks?x=1", body=b"{}", headers={"Host": "localhost"})
r = plain.getresponse()
r.read()
check(r.status == 308 and r.getheader("Location") == f"https://localhost:{b_port}/api/v2/tasks?x=1",
      f"plain HTTP gets 308 to HTTPS ({r.status} {r.getheader('Location')})")
plain.request("GET", "/.well-known/acme-challenge/unknown-token", headers={"Host": "localhost"})
r = plain.getresponse()
r.read()
check(r.status == 404, "an unknown challenge token is 404, not a redirect")
b.stop()

print("== 6. two instances on one store directory order once")
shared = os.path.join(WORK, "shared")
reachable = Gatehouse("shared-1", shared, TLS_PORT, store_name="one.redb")
other_port = free_port()
orderer = Gatehouse("shared-2", shared, other_port, store_name="two.redb")
os.makedirs(os.path.join(shared, "acme"), mode=0o700, exist_ok=True)
held = open(os.path.join(shared, "acme", "order.lock"), "w")
fcntl.flock(held, fcntl.LOCK_EX)
orders_before = pebble.orders()
reachable.start()
wait_for("the reachable instance to wait on the lock",
         lambda: reachable.has("another instance is ordering"), 20)
# It now waits 5 s before trying the lock again; the other instance takes it.
fcntl.flock(held, fcntl.LOCK_UN)
held.close()
orderer.start()
orderer.wait_ready()
reachable.wait_ready()
check(orderer.has("ACME order created") and not reachable.has("ACME order created"),
      "the instance the CA cannot reach ordered; the other answered from the shared directory")
check(pebble.orders() - orders_before == 1, "pebble saw one order for both")
check(served(TLS_PORT, pebble.root_file)[0] == served(other_port, pebble.root_file)[0],
      "both serve the same certificate")
check(not os.path.exists(os.path.join(shared, "acme", "challenges")),
      "shared challenge answers are removed after the order")
orderer.stop()
reachable.stop()

print("== 7. no certificate and the CA unreachable")
closed_port = free_port()
d = Gatehouse("nowhere", os.path.join(WORK, "nowhere"), free_port(),
              directory=f"https://127.0.0.1:{closed_port}/dir")
d.start()
wait_for("the failed order", lambda: d.messages("ACME order failed", "ERROR"), 20)
try:
    served(d.tls_port, pebble.root_file)
    fail("a handshake succeeded without a certificate")
except ssl.SSLError as e:
    check("ALERT" in str(e).upper(),
          f"handshakes are refused with a TLS alert ({e.reason})")
status, body = d.admin("/readyz")
check(status == 503 and json.loads(body).get("certificate") == "waiting",
      f"/readyz is 503 with certificate waiting ({body})")
check(d.metric("gatehouse_acme_order_failures_total") >= 1, "metrics count the failure")
check(d.metric("gatehouse_tls_certificate_expiry_seconds") == 0, "no expiry before a certificate")
d.stop()
pebble.stop()
upstream.shutdown()
shutil.rmtree(WORK, ignore_errors=True)
print("acme-pebble: all checks passed")
