// The Flowtask client flow as small steps, run in order by suite.test.mjs
// once per protocol. Each step gets the shared context `t`:
//   t.world     servers from harness.mjs (gatehouse, upstream, smtp, foreign)
//   t.browser   the Chromium instance; t.page the app's tab
//   t.protocol  'h2' or 'http/1.1' (what Chromium must have used)
//   t.email, t.password, t.state (anything a step leaves for later ones)
// To extend the suite (WebSockets, passkeys...), add a step function and put
// it in STEPS at the right place.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';

const app = (t, fn, ...args) => t.page.evaluate(
  (name, list) => window.flowtask[name](...list), fn, args);

async function openApp(t) {
  const resp = await t.page.goto(`${t.world.gatehouse.origin}/`, { waitUntil: 'load' });
  assert.equal(resp.status(), 200, 'the app page comes through Gatehouse');
  await t.page.waitForFunction(() => window.flowtask !== undefined);
  const nav = await t.page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert.equal(nav, t.protocol, 'the page was loaded over the expected protocol');
}

async function signUp(t) {
  const sent = await app(t, 'sendOtp', t.email);
  assert.equal(sent.status, 200, sent.text);
  const code = await t.world.smtp.codeFor(t.email);
  const verified = await app(t, 'verify', t.email, code, t.password);
  assert.equal(verified.status, 200, verified.text);
}

async function cookiesAsStored(t) {
  const cdp = await t.page.createCDPSession();
  const { cookies } = await cdp.send('Network.getCookies', { urls: [t.world.gatehouse.origin] });
  await cdp.detach();
  const session = cookies.find((c) => c.name === '__Host-gatehouse_session');
  assert.ok(session, `session cookie stored with the __Host- prefix: ${JSON.stringify(cookies)}`);
  assert.equal(session.httpOnly, true, 'HttpOnly');
  assert.equal(session.secure, true, 'Secure');
  assert.equal(session.sameSite, 'Lax', 'SameSite=Lax');
  assert.equal(session.path, '/', '__Host- needs Path=/');
  assert.equal(session.domain, 'localhost', 'host-only (no Domain attribute)');
  const device = cookies.find((c) => c.name === '__Host-gatehouse_session_device');
  assert.ok(device, 'known-device cookie stored');
  assert.equal(device.httpOnly, true);
  assert.equal(device.secure, true);
  assert.equal(device.sameSite, 'Strict');
  const days = (device.expires * 1000 - Date.now()) / 86_400_000;
  assert.ok(days > 300 && days < 400, `device cookie lasts about a year (${days} days)`);
  const visible = await t.page.evaluate(() => document.cookie);
  assert.ok(!visible.includes('gatehouse_session'), `cookies visible to scripts: ${visible}`);
  t.state.sessionValue = session.value;
}

async function authCheckSignedIn(t) {
  const r = await app(t, 'authCheck');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { isAuthenticated: true, email: t.email });
}

async function writeThroughApiV2(t) {
  const before = t.world.upstream.records.length;
  const created = await app(t, 'createTask', 'write the browser suite');
  assert.equal(created.status, 201, `POST /api/v2/tasks: ${created.text}`);
  const id = created.body.id;
  const updated = await app(t, 'updateTask', id, { title: 'write the browser suite', done: true });
  assert.equal(updated.status, 200, `PUT /api/v2/tasks/${id}: ${updated.text}`);
  assert.equal(updated.body.done, true);
  const kept = await app(t, 'createTask', 'sign out and in again');
  assert.equal(kept.status, 201, kept.text);
  const removed = await app(t, 'deleteTask', id);
  assert.equal(removed.status, 200, `DELETE /api/v2/tasks/${id}: ${removed.text}`);
  const list = await app(t, 'listTasks');
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.map((task) => task.title), ['sign out and in again']);
  const seen = t.world.upstream.records.slice(before);
  assert.deepEqual(seen.map((r) => r.method), ['POST', 'PUT', 'POST', 'DELETE', 'GET']);
  for (const r of seen) {
    assert.equal(r.user, t.email, 'identity header from Gatehouse');
    assert.equal(r.forwardedHost, `localhost:${t.world.gatehouse.port}`, 'X-Forwarded-Host is the authority');
    assert.equal(r.forwardedProto, 'https');
    assert.ok(!String(r.cookie).includes('gatehouse_session='), 'session cookie kept from the upstream');
  }
}

/**
 * The reproduction with curl, using the session the browser holds:
 * a same-origin POST with the cookie over --http2 and over --http1.1.
 */
async function curlWithTheBrowsersCookie(t) {
  const { gatehouse } = t.world;
  for (const flag of ['--http2', '--http1.1']) {
    // Not execFileSync: the upstream answering curl runs in this process.
    const { stdout: out } = await promisify(execFile)('curl', [
      '-sS', flag, '--max-time', '10', '--cacert', t.world.certs.ca,
      '-o', '/dev/null', '-w', '%{http_code} %{http_version}',
      '-X', 'POST', '-H', 'content-type: application/json', '-d', '{"title":"from curl"}',
      '-H', `origin: ${gatehouse.origin}`, '-H', 'sec-fetch-site: same-origin',
      '-b', `__Host-gatehouse_session=${t.state.sessionValue}`,
      `${gatehouse.origin}/api/v2/tasks`,
    ], { encoding: 'utf8', timeout: 15_000 });
    const [status, version] = out.trim().split(' ');
    assert.equal(version, flag === '--http2' ? '2' : '1.1', `curl ${flag} spoke HTTP/${version}`);
    assert.equal(status, '201', `curl ${flag}: POST /api/v2/tasks with Origin and cookie`);
  }
  // Tidy up: the app's task list is checked later.
  const list = await app(t, 'listTasks');
  for (const task of list.body.filter((x) => x.title === 'from curl')) {
    assert.equal((await app(t, 'deleteTask', task.id)).status, 200);
  }
}

/** Forged requests from a foreign page; returns Gatehouse's refusal lines for it. */
async function forgeFrom(t, foreignOrigin) {
  const page = await t.browser.newPage();
  try {
    await page.goto(`${foreignOrigin}/`, { waitUntil: 'load' });
    const results = await page.evaluate((target) => window.forge(target), t.world.gatehouse.origin);
    assert.equal(results.length, 4, JSON.stringify(results));
    for (const r of results) assert.ok(!r.error, `request could not even be sent: ${JSON.stringify(r)}`);
    // The classic: a top-level form POST to logout.
    await page.evaluate((action) => { document.getElementById('form-logout').action = action; },
      `${t.world.gatehouse.origin}/api/v1/user/logout`);
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.evaluate(() => document.getElementById('form-logout').submit()),
    ]);
  } finally {
    await page.close();
  }
}

async function foreignPagesCannotForgeRequests(t) {
  const { foreign, gatehouse, upstream } = t.world;
  const refusalsBefore = gatehouse.lines.filter((l) => l.includes('cross-site request refused')).length;
  // A different site (127.0.0.1 vs localhost): SameSite=Lax keeps the
  // cookie out of its POSTs. A same-site page on another port: the browser
  // sends the cookie, and only Gatehouse's Origin check stands in the way.
  await forgeFrom(t, foreign.crossSite);
  await forgeFrom(t, foreign.sameSite);
  assert.ok(!upstream.records.some((r) => r.url.includes('forged')), 'a forged request reached the upstream');
  const refusals = gatehouse.lines
    .filter((l) => l.includes('cross-site request refused'))
    .slice(refusalsBefore);
  const fromSameSite = refusals.filter((l) => l.includes(`origin=${foreign.sameSite}`));
  // logout, logout-all, /api/v2, sign-in, and the form post: all carried the cookie.
  assert.ok(fromSameSite.length >= 5, `Gatehouse refused the same-site forgeries:\n${refusals.join('\n')}`);
  // The different site's POSTs carry no cookie; its logout attempts
  // (fetch to logout and logout-all, the form post) are refused all the same.
  const fromCrossSite = refusals.filter((l) => l.includes(`origin=${foreign.crossSite}`));
  assert.ok(fromCrossSite.length >= 3, `Gatehouse refused the cross-site logouts:\n${refusals.join('\n')}`);
  for (const line of [...fromSameSite, ...fromCrossSite]) {
    assert.ok(line.includes(`compared_with=${gatehouse.origin}`), line);
  }
  await authCheckSignedIn(t);
}

/**
 * The page opens a WebSocket through Gatehouse (over HTTP/2 that is RFC 8441
 * extended CONNECT), exchanges text and binary messages, logs out, and
 * sees the socket closed within the 5 s Gatehouse promises; then signs in
 * again for the steps after it.
 */
async function webSocketEndsWithTheSession(t) {
  const { sockets } = t.world.upstream;
  const [handshakesBefore, closedBefore] = [sockets.handshakes.length, sockets.closed];
  const events = await t.page.evaluate(async () => {
    const inbox = [];
    let wake = () => {};
    const push = (item) => { inbox.push(item); wake(); };
    const next = async (ms) => {
      const until = Date.now() + ms;
      while (inbox.length === 0) {
        if (Date.now() > until) return { timeout: ms };
        await new Promise((r) => { wake = r; setTimeout(r, 100); });
      }
      return inbox.shift();
    };
    const ws = new WebSocket(`wss://${location.host}/api/v2/live`);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => push(typeof e.data === 'string' ? e.data : Array.from(new Uint8Array(e.data)));
    ws.onclose = (e) => push({ closed: e.code });
    ws.onerror = () => push({ error: true });
    const out = {};
    out.opened = await new Promise((r) => { ws.onopen = () => r(true); setTimeout(() => r(false), 5000); });
    out.welcome = await next(5000);
    ws.send('hello through gatehouse');
    out.text = await next(5000);
    ws.send(new Uint8Array([0, 1, 254, 255]));
    out.binary = await next(5000);
    out.logout = (await window.flowtask.logout()).status;
    out.afterLogout = await next(5000);
    window.flowtask.log(`WebSocket closed after logout: ${JSON.stringify(out.afterLogout)}`, 'closed' in out.afterLogout);
    return out;
  });
  assert.equal(events.opened, true, `the WebSocket opened: ${JSON.stringify(events)}`);
  assert.equal(events.welcome, 'welcome', 'upstream -> browser');
  assert.equal(events.text, 'hello through gatehouse', 'text echo');
  assert.deepEqual(events.binary, [0, 1, 254, 255], 'binary echo');
  assert.equal(events.logout, 200);
  assert.ok('closed' in events.afterLogout, `closed within 5 s of logout: ${JSON.stringify(events.afterLogout)}`);
  const seen = sockets.handshakes.slice(handshakesBefore);
  assert.equal(seen.length, 1, 'one handshake reached the upstream');
  assert.equal(seen[0].user, t.email, 'identity header on the handshake');
  assert.equal(seen[0].forwardedProto, 'https');
  assert.ok(!String(seen[0].cookie).includes('gatehouse_session='), 'session cookie kept from the upstream');
  await waitUntil(() => sockets.closed > closedBefore, 'the upstream side of the socket closed');
  const back = await app(t, 'signIn', t.email, t.password);
  assert.equal(back.status, 200, back.text);
  await authCheckSignedIn(t);
}

async function waitUntil(check, what, ms = 5000) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function logoutThen401(t) {
  const out = await app(t, 'logout');
  assert.equal(out.status, 200, `logout: ${out.text}`);
  const check = await app(t, 'authCheck');
  assert.deepEqual(check.body, { isAuthenticated: false });
  const list = await app(t, 'listTasks');
  assert.equal(list.status, 401, 'signed out: /api/v2 answers 401');
  const again = await app(t, 'createTask', 'after logout');
  assert.equal(again.status, 401);
}

async function signInAgain(t) {
  const r = await app(t, 'signIn', t.email, t.password);
  assert.equal(r.status, 200, r.text);
  await authCheckSignedIn(t);
  const list = await app(t, 'listTasks');
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.map((task) => task.title), ['sign out and in again']);
}

async function signInWhileSignedInThenLogoutAll(t) {
  const r = await app(t, 'signIn', t.email, t.password);
  assert.equal(r.status, 200, `sign-in while signed in: ${r.text}`);
  const all = await app(t, 'logoutAll');
  assert.equal(all.status, 200, `logout-all: ${all.text}`);
  const check = await app(t, 'authCheck');
  assert.deepEqual(check.body, { isAuthenticated: false });
  const back = await app(t, 'signIn', t.email, t.password);
  assert.equal(back.status, 200, back.text);
  await authCheckSignedIn(t);
  await app(t, 'listTasks');
}

async function everyRequestUsedTheProtocol(t) {
  const entries = await app(t, 'protocols');
  const api = entries.filter((e) => e.name.includes('/api/'));
  assert.ok(api.length >= 10, `the browser recorded the API calls: ${JSON.stringify(entries)}`);
  for (const e of entries) assert.equal(e.protocol, t.protocol, `${e.name} went over ${e.protocol}`);
  await t.page.evaluate((p) => window.flowtask.log(`all ${p.length} requests over ${p[0].protocol}`, true), entries);
}

async function screenshot(t) {
  const file = path.join(t.world.dir, `final-${t.protocol.replace('/', '')}.png`);
  await t.page.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 1000, 'screenshot written');
  console.log(`# screenshot: ${file}`);
}

export const STEPS = [
  ['the app page loads through Gatehouse', openApp],
  ['sign up with the code from the SMTP server', signUp],
  ['cookie attributes as the browser stored them', cookiesAsStored],
  ['auth-check says signed in', authCheckSignedIn],
  ['POST, PUT, DELETE through /api/v2', writeThroughApiV2],
  ['curl --http2 and --http1.1 with the same cookie', curlWithTheBrowsersCookie],
  ['pages on other sites cannot forge requests', foreignPagesCannotForgeRequests],
  ['a WebSocket echoes, then closes on logout', webSocketEndsWithTheSession],
  ['logout, then 401', logoutThen401],
  ['sign in again', signInAgain],
  ['sign-in while signed in, logout-all', signInWhileSignedInThenLogoutAll],
  ['every request went over the expected protocol', everyRequestUsedTheProtocol],
  ['screenshot of the final page', screenshot],
];
