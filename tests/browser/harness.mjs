// The real parts the browser suite runs against, all on loopback:
// - a test CA and a server certificate for localhost / 127.0.0.1 (openssl);
// - the Flowtask-style upstream (Node http) that serves the page and a small
//   task API and records every request it gets, plus a WebSocket echo at
//   /api/v2/live (the `ws` package);
// - a real SMTP server (Python's aiosmtpd, Mailbox handler) that receives
//   the sign-up codes;
// - the real Gatehouse binary with TLS in front of them;
// - a "foreign" HTTPS site (Node https) serving a page that forges requests;
// - a certified OpenID provider (npm `oidc-provider`, tests/oidc/provider.mjs,
//   the same script the Rust OIDC tests use) over HTTPS at 127.0.0.1 with the
//   same test certificate, configured in Gatehouse as `google`;
// - Debian's Chromium, driven by puppeteer-core, trusting the test
//   certificate through its SPKI pin (no certificate errors are ignored).
//
// Everything is started by `startWorld()` and stopped by `world.stop()`.

import { spawn, execFileSync } from 'node:child_process';
import readline from 'node:readline';
import { createHash, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import puppeteer from 'puppeteer-core';
import { WebSocketServer } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

/** How long any one start-up or wait may take. */
const STARTUP_MS = 30_000;

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const GATEHOUSE = process.env.GATEHOUSE_BIN || path.join(repo, 'target', 'debug', 'gatehouse');
export const PYTHON = process.env.PYTHON_BIN || 'python3';

/** A fresh directory kept after the run (screenshots and logs live there). */
export function workDir() {
  const base = process.env.BROWSER_ARTIFACTS || os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, 'gatehouse-browser-'));
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(what, check, limitMs = STARTUP_MS) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** A CA and a leaf for localhost and 127.0.0.1, made with openssl. */
export function makeCertificates(dir) {
  const p = (name) => path.join(dir, name);
  const run = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', p('ca-key.pem'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=Gatehouse Browser Test CA');
  run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', p('key.pem'), '-out', p('leaf.csr'), '-subj', '/CN=localhost');
  fs.writeFileSync(p('leaf.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' +
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n');
  run('x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca-key.pem'),
    '-CAcreateserial', '-out', p('leaf.pem'), '-days', '2', '-extfile', p('leaf.ext'));
  fs.writeFileSync(p('cert.pem'), fs.readFileSync(p('leaf.pem'), 'utf8') + fs.readFileSync(p('ca.pem'), 'utf8'));
  const leaf = new X509Certificate(fs.readFileSync(p('leaf.pem')));
  const spki = createHash('sha256')
    .update(leaf.publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');
  return {
    ca: p('ca.pem'),
    cert: p('cert.pem'),
    key: p('key.pem'),
    certPem: fs.readFileSync(p('cert.pem')),
    keyPem: fs.readFileSync(p('key.pem')),
    spki,
  };
}

/** The Flowtask-style app: the page, its script, and a task API. */
export async function startUpstream() {
  const records = [];
  const tasks = new Map();
  let nextId = 1;
  const files = {
    '/': ['index.html', 'text/html; charset=utf-8'],
    '/app.js': ['app.js', 'text/javascript; charset=utf-8'],
    // Where the OIDC callback sends the browser: the same single-page app.
    '/onboarding/welcome': ['index.html', 'text/html; charset=utf-8'],
    '/app/today': ['index.html', 'text/html; charset=utf-8'],
    '/signin': ['index.html', 'text/html; charset=utf-8'],
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; if (body.length > 65536) req.destroy(); });
    req.on('end', () => {
      const url = new URL(req.url, 'http://upstream');
      records.push({
        method: req.method,
        url: req.url,
        user: req.headers['x-auth-email'] || null,
        userId: req.headers['x-auth-user-id'] || null,
        forwardedHost: req.headers['x-forwarded-host'] || null,
        forwardedProto: req.headers['x-forwarded-proto'] || null,
        cookie: req.headers.cookie || null,
        body,
      });
      const file = files[url.pathname];
      if (file && req.method === 'GET') {
        res.writeHead(200, { 'content-type': file[1] });
        res.end(fs.readFileSync(path.join(here, 'app', file[0])));
        return;
      }
      const json = (status, value) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(value));
      };
      const m = url.pathname.match(/^\/api\/v2\/tasks(?:\/(\d+))?$/);
      if (!m) return json(404, { message: 'Not found' });
      const owner = req.headers['x-auth-email'];
      if (!owner) return json(500, { message: 'no identity from Gatehouse' });
      let input = {};
      try { input = body ? JSON.parse(body) : {}; } catch { return json(400, { message: 'bad JSON' }); }
      const id = m[1] && Number(m[1]);
      switch (req.method) {
        case 'GET':
          return json(200, [...tasks.values()].filter((t) => t.owner === owner));
        case 'POST': {
          const task = { id: nextId++, owner, title: String(input.title || ''), done: false };
          tasks.set(task.id, task);
          return json(201, task);
        }
        case 'PUT': {
          const task = tasks.get(id);
          if (!task || task.owner !== owner) return json(404, { message: 'No such task' });
          Object.assign(task, { title: String(input.title ?? task.title), done: Boolean(input.done) });
          return json(200, task);
        }
        case 'DELETE': {
          const task = tasks.get(id);
          if (!task || task.owner !== owner) return json(404, { message: 'No such task' });
          tasks.delete(id);
          return json(200, { deleted: id });
        }
        default:
          return json(405, { message: 'Method not allowed' });
      }
    });
  });
  // WebSockets at /api/v2/live: a greeting, then every message echoed.
  // Handshakes are recorded as Gatehouse forwarded them.
  const sockets = { handshakes: [], closed: 0 };
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if (!req.url.startsWith('/api/v2/live')) { socket.destroy(); return; }
    sockets.handshakes.push({
      user: req.headers['x-auth-email'] || null,
      cookie: req.headers.cookie || null,
      forwardedProto: req.headers['x-forwarded-proto'] || null,
    });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send('welcome');
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
      ws.on('close', () => { sockets.closed += 1; });
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { port: server.address().port, records, sockets, stop: () => server.close() };
}

/** aiosmtpd writing every mail into a maildir. */
export async function startSmtp(dir) {
  const port = await freePort();
  const maildir = path.join(dir, 'maildir'); // must not exist yet
  const log = fs.openSync(path.join(dir, 'smtp.log'), 'a');
  const child = spawn(PYTHON, ['-m', 'aiosmtpd', '-n', '-l', `127.0.0.1:${port}`,
    '-c', 'aiosmtpd.handlers.Mailbox', maildir], { stdio: ['ignore', log, log] });
  await waitFor('the SMTP server', () => portOpen(port));
  const mails = () => {
    const out = [];
    for (const sub of ['new', 'cur']) {
      const d = path.join(maildir, sub);
      if (!fs.existsSync(d)) continue;
      for (const f of fs.readdirSync(d)) out.push(fs.readFileSync(path.join(d, f), 'utf8'));
    }
    return out;
  };
  const mailsTo = (to) =>
    mails().filter((m) => new RegExp(`^To: .*${to.replace(/[.+]/g, '\\$&')}`, 'mi').test(m));
  return {
    port,
    /** Every mail delivered to `to` so far, as raw text. */
    mailsTo,
    /** Waits until `count(mailsTo(to))` is at least `n`; returns those mails. */
    async waitForMails(what, to, pick, n = 1) {
      return waitFor(what, () => {
        const picked = mailsTo(to).filter(pick);
        return picked.length >= n ? picked : null;
      });
    },
    /** Waits for the `n`th mail to `to` and returns its six-digit code. */
    async codeFor(to, n = 1) {
      const mail = await waitFor(`mail #${n} to ${to}`, () => {
        const mine = mailsTo(to);
        return mine.length >= n ? mine[n - 1] : null;
      });
      const body = mail.split(/\r?\n\r?\n/).slice(1).join('\n');
      const code = body.split(/[^A-Za-z0-9]/).find((w) => /^\d{6}$/.test(w));
      if (!code) throw new Error(`no code in mail:\n${mail}`);
      return code;
    },
    stop: () => child.kill('SIGTERM'),
  };
}

/**
 * The certified OpenID provider of tests/oidc (run `npm ci` there first),
 * serving `certs` at https://127.0.0.1:PORT, with `redirectUris` registered
 * for its one client ("gatehouse" / "gatehouse-secret"). Any login is
 * accepted; the login is the account's (verified) email.
 */
export async function startProvider(dir, { certs, redirectUris }) {
  const oidcDir = path.join(repo, 'tests', 'oidc');
  if (!fs.existsSync(path.join(oidcDir, 'node_modules', 'oidc-provider'))) {
    throw new Error(`${oidcDir}/node_modules is missing: run \`npm ci\` there (.ci/browser.sh does)`);
  }
  const log = fs.openSync(path.join(dir, 'provider.log'), 'a');
  const child = spawn(process.execPath, [path.join(oidcDir, 'provider.mjs'), certs.cert, certs.key], {
    cwd: oidcDir,
    stdio: ['pipe', 'pipe', log],
  });
  const lines = readline.createInterface({ input: child.stdout });
  const pending = [];
  const waiting = [];
  lines.on('line', (line) => {
    const next = waiting.shift();
    if (next) next(line); else pending.push(line);
  });
  const nextLine = async (what) => {
    let timer;
    try {
      const line = await Promise.race([
        new Promise((resolve) => (pending.length ? resolve(pending.shift()) : waiting.push(resolve))),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(
            new Error(`the provider did not print ${what} (see ${dir}/provider.log)`)), STARTUP_MS);
        }),
      ]);
      return JSON.parse(line);
    } finally {
      clearTimeout(timer); // a pending timer would keep the suite's process alive
    }
  };
  const { issuer } = await nextLine('its issuer');
  child.stdin.write(`${JSON.stringify({ redirect_uris: redirectUris })}\n`);
  const { ready } = await nextLine('ready');
  if (ready !== true) throw new Error('the provider did not get ready');
  return {
    issuer,
    stop: () => { child.stdin.end(); child.kill('SIGTERM'); },
  };
}

/** Gatehouse's `[[oidc]]` and `[oauth]` sections for the provider as `google`. */
function oidcConfig({ certs, provider, origin }) {
  return `
[[oidc]]
name = "google"
issuer = "${provider.issuer}"
client_id = "gatehouse"
client_secret = "gatehouse-secret"
redirect_url = "${origin}/api/v1/oauth/google/callback"
ca_file = "${certs.ca}"
[oauth]
frontend_url = "${origin}"
success_path = "/app/today"
new_user_path = "/onboarding/welcome"
error_path = "/signin"
`;
}

/**
 * The real Gatehouse binary with TLS, in front of `upstreamPort`; with
 * `provider`, it offers "Sign in with Google" through it (then `port` must
 * be the one registered with the provider).
 */
export async function startGatehouse(dir, { certs, upstreamPort, smtpPort, port: chosen, provider, extraToml = '' }) {
  const port = chosen || await freePort();
  const origin = `https://localhost:${port}`;
  const config = path.join(dir, 'gatehouse.toml');
  fs.writeFileSync(config, `
[server]
listen = "127.0.0.1:${port}"
workers = 2
[tls]
cert = "${certs.cert}"
key = "${certs.key}"
[upstream]
url = "http://127.0.0.1:${upstreamPort}"
timeout = "10s"
[store]
path = "${path.join(dir, 'data', 'gatehouse.redb')}"
[mail]
transport = "smtp"
from = "Flowtask <no-reply@example.com>"
[mail.smtp]
host = "127.0.0.1"
port = ${smtpPort}
security = "none"
timeout = "5s"
[admin]
listen = "off"
[[route]]
prefix = "/api/v2/"
auth = "required"
[[route]]
prefix = "/"
auth = "optional"
${provider ? oidcConfig({ certs, provider, origin }) : ''}
${extraToml}`);
  const lines = [];
  const logFile = fs.createWriteStream(path.join(dir, 'gatehouse.log'));
  const child = spawn(GATEHOUSE, ['serve', '--config', config], {
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let buffered = '';
  child.stderr.on('data', (chunk) => {
    logFile.write(chunk);
    buffered += chunk;
    const parts = buffered.split('\n');
    buffered = parts.pop();
    lines.push(...parts);
  });
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  await waitFor('gatehouse to listen', () => {
    if (exited !== null) throw new Error(`gatehouse exited with ${exited}:\n${lines.join('\n')}`);
    return lines.some((l) => l.includes('listening on'));
  });
  return {
    port,
    origin,
    lines,
    stop: () => { child.kill('SIGTERM'); logFile.end(); },
  };
}

/**
 * A foreign site over HTTPS: the same server is a *different site* when
 * reached as https://127.0.0.1:PORT and a *same-site, cross-origin* page
 * when reached as https://localhost:PORT (cookies ignore ports; origins
 * do not). It serves one page with a script that forges requests.
 */
export async function startForeignSite(certs) {
  const server = https.createServer({ cert: certs.certPem, key: certs.keyPem }, (req, res) => {
    const file = req.url.startsWith('/forger.js') ? 'forger.js' : 'forger.html';
    const type = file.endsWith('.js') ? 'text/javascript' : 'text/html; charset=utf-8';
    res.writeHead(200, { 'content-type': type });
    res.end(fs.readFileSync(path.join(here, 'app', file)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  return {
    crossSite: `https://127.0.0.1:${port}`,
    sameSite: `https://localhost:${port}`,
    stop: () => server.close(),
  };
}

/** Debian's Chromium, headless, trusting only our leaf by its SPKI pin. */
export async function launchBrowser(dir, { certs, protocol }) {
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // Containers often have a tiny /dev/shm; Chromium then crashes mid-run.
    '--disable-dev-shm-usage',
    `--user-data-dir=${path.join(dir, `chromium-${protocol.replace('/', '')}`)}`,
    `--ignore-certificate-errors-spki-list=${certs.spki}`,
  ];
  if (protocol === 'http/1.1') args.push('--disable-http2');
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args,
    // puppeteer's defaults include flags we set ourselves.
    ignoreDefaultArgs: ['--headless'],
    protocolTimeout: STARTUP_MS,
  });
}

/**
 * Everything above, started together. Options (all optional):
 * `provider: false` leaves out the OpenID provider; `extraToml` (or its
 * older name `gatehouseToml`) is appended to Gatehouse's configuration (e.g.
 * an `[mfa]` table, a `[pages]` section and more routes, which take
 * precedence by longest prefix).
 */
export async function startWorld(options = {}) {
  const dir = workDir();
  const certs = makeCertificates(dir);
  const upstream = await startUpstream();
  const smtp = await startSmtp(dir);
  // The provider must know Gatehouse's callback before Gatehouse starts.
  const port = await freePort();
  const provider = options.provider === false ? null : await startProvider(dir, {
    certs,
    redirectUris: [`https://localhost:${port}/api/v1/oauth/google/callback`],
  });
  const gatehouse = await startGatehouse(dir, {
    certs, upstreamPort: upstream.port, smtpPort: smtp.port, port, provider,
    extraToml: [options.gatehouseToml, options.extraToml].filter(Boolean).join('\n'),
  });
  const foreign = await startForeignSite(certs);
  return {
    dir,
    certs,
    upstream,
    smtp,
    provider,
    gatehouse,
    foreign,
    stop() {
      foreign.stop();
      gatehouse.stop();
      if (provider) provider.stop();
      smtp.stop();
      upstream.stop();
      // Keep the screenshots and logs; the browser profiles are large.
      for (const name of fs.readdirSync(dir)) {
        if (name.startsWith('chromium-')) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
      }
    },
  };
}
