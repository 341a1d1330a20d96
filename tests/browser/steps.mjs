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

/**
 * Records the protocol of every response the tab gets, redirects included
 * (the Performance API does not see redirects; the DevTools protocol does).
 */
async function recordResponses(page) {
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  const seen = [];
  const note = (r) => seen.push({ url: r.url, status: r.status, protocol: r.protocol });
  cdp.on('Network.requestWillBeSent', (e) => { if (e.redirectResponse) note(e.redirectResponse); });
  cdp.on('Network.responseReceived', (e) => note(e.response));
  return { seen, stop: () => cdp.detach() };
}

/**
 * On the provider's pages: types the login into its login form and submits,
 * gives consent if asked. Returns the pages clicked through and the
 * response the browser finally landed on (after Gatehouse's callback).
 */
async function throughProvider(t, login) {
  const { issuer } = t.world.provider;
  const clicked = [];
  let landed = null;
  for (let i = 0; i < 4 && t.page.url().startsWith(`${issuer}/interaction/`); i += 1) {
    if (await t.page.$('input[name="login"]')) {
      clicked.push('login');
      await t.page.type('input[name="login"]', login);
      await t.page.type('input[name="password"]', 'any password will do');
    } else {
      clicked.push('consent');
    }
    [landed] = await Promise.all([
      t.page.waitForNavigation({ waitUntil: 'load' }),
      t.page.click('button[type="submit"]'),
    ]);
  }
  return { clicked, landed };
}

/** Clicks "Sign in with Google" on the app page; the provider's login page must show. */
async function clickSignInWithGoogle(t) {
  const { issuer } = t.world.provider;
  const [shown] = await Promise.all([
    t.page.waitForNavigation({ waitUntil: 'load' }),
    t.page.click('#google-signin'),
  ]);
  assert.ok(t.page.url().startsWith(`${issuer}/interaction/`), `on the provider's pages: ${t.page.url()}`);
  assert.equal(shown.status(), 200);
}

/**
 * Where the provider's redirect ended: Gatehouse's callback, then the
 * app's `path`, showing `screen` and the signed-in user, every Gatehouse
 * response over the expected protocol, the session cookie stored.
 */
async function landedThroughCallback(t, { landed, recorder, path: wanted, screen }) {
  const { gatehouse, provider } = t.world;
  const url = new URL(t.page.url());
  assert.equal(url.origin, gatehouse.origin, `back at Gatehouse: ${url}`);
  assert.equal(`${url.pathname}${url.search}`, wanted, 'the callback sent the browser to the right screen');
  assert.equal(landed.status(), 200);
  const chain = landed.request().redirectChain().map((r) => new URL(r.url()));
  const callback = chain.findIndex((u) => u.origin === gatehouse.origin
    && u.pathname === '/api/v1/oauth/google/callback');
  assert.ok(callback >= 0, `through Gatehouse's callback: ${chain.join(' -> ')}`);
  assert.ok(chain[callback].searchParams.get('code'), 'the callback carried a code');
  assert.ok(chain.slice(0, callback).some((u) => u.origin === provider.issuer), 'redirected by the provider');

  await t.page.waitForFunction(() => window.flowtask
    && document.getElementById('who').textContent.startsWith('Signed in as'), { timeout: 10_000 });
  const shows = await t.page.evaluate(() => ({
    who: document.getElementById('who').textContent,
    screen: document.getElementById('screen').textContent,
    protocol: performance.getEntriesByType('navigation')[0].nextHopProtocol,
  }));
  assert.deepEqual(shows, { who: `Signed in as ${t.oidcEmail}`, screen, protocol: t.protocol });

  const fromGatehouse = recorder.seen.filter((r) => r.url.startsWith(gatehouse.origin));
  const paths = fromGatehouse.map((r) => new URL(r.url).pathname);
  for (const p of ['/api/v1/oauth/google/connect', '/api/v1/oauth/google/callback', url.pathname]) {
    assert.ok(paths.includes(p), `${p} among the responses: ${paths.join(', ')}`);
  }
  for (const r of fromGatehouse) assert.equal(r.protocol, t.protocol, `${r.url} went over ${r.protocol}`);
  assert.ok(recorder.seen.some((r) => r.url.startsWith(provider.issuer)), 'the provider answered too');

  const cdp = await t.page.createCDPSession();
  const { cookies } = await cdp.send('Network.getCookies', { urls: [gatehouse.origin] });
  await cdp.detach();
  const session = cookies.find((c) => c.name === '__Host-gatehouse_session');
  assert.ok(session, `session cookie stored: ${JSON.stringify(cookies)}`);
  assert.deepEqual(
    [session.httpOnly, session.secure, session.sameSite, session.path, session.domain],
    [true, true, 'Lax', '/', 'localhost'],
    'the same session cookie as a password sign-in',
  );
  assert.ok(!cookies.some((c) => c.name === '__Host-gatehouse-oidc'), 'the state cookie was cleared');
  return session.value;
}

/** auth-check and a proxied /api/v2 request, as the OIDC user. */
async function signedInAsOidcUser(t) {
  const check = await app(t, 'authCheck');
  assert.equal(check.status, 200);
  assert.deepEqual(check.body, { isAuthenticated: true, email: t.oidcEmail });
  const before = t.world.upstream.records.length;
  const list = await app(t, 'listTasks');
  assert.equal(list.status, 200, `GET /api/v2/tasks: ${list.text}`);
  const seen = t.world.upstream.records.slice(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0].user, t.oidcEmail, 'the upstream was told who the OIDC user is');
  return list.body.map((task) => task.title);
}

/**
 * Signed out, the user clicks "Sign in with Google" and then the provider's
 * "Cancel": back on the app's error_path with ?error=access_denied, still
 * signed out (and no account made: the next step is a first sign-in).
 */
async function googleSignInCancelled(t) {
  t.oidcEmail = `google-${t.protocol.replace(/\W/g, '')}@example.com`;
  await app(t, 'logout');
  await openApp(t);
  const recorder = await recordResponses(t.page);
  try {
    await clickSignInWithGoogle(t);
    const [landed] = await Promise.all([
      t.page.waitForNavigation({ waitUntil: 'load' }),
      t.page.click('.login-help a[href$="/abort"]'),
    ]);
    const url = new URL(t.page.url());
    assert.equal(url.origin, t.world.gatehouse.origin);
    assert.equal(`${url.pathname}${url.search}`, '/signin?error=access_denied');
    assert.equal(landed.status(), 200);
    const chain = landed.request().redirectChain().map((r) => new URL(r.url()));
    const callback = chain.find((u) => u.pathname === '/api/v1/oauth/google/callback');
    assert.ok(callback, `through Gatehouse's callback: ${chain.join(' -> ')}`);
    assert.equal(callback.searchParams.get('error'), 'access_denied', 'the provider said access_denied');
    const fromGatehouse = recorder.seen.filter((r) => r.url.startsWith(t.world.gatehouse.origin));
    for (const r of fromGatehouse) assert.equal(r.protocol, t.protocol, `${r.url} went over ${r.protocol}`);
  } finally {
    await recorder.stop();
  }
  await t.page.waitForFunction(() => window.flowtask !== undefined);
  assert.deepEqual((await app(t, 'authCheck')).body, { isAuthenticated: false });
  const shows = await t.page.evaluate(() => ({
    who: document.getElementById('who').textContent,
    screen: document.getElementById('screen').textContent,
    log: document.getElementById('log').textContent,
  }));
  assert.equal(shows.who, 'Signed out');
  assert.equal(shows.screen, 'Sign in');
  assert.ok(shows.log.includes('sign-in failed: access_denied'), shows.log);
}

/**
 * Signed out, the user clicks "Sign in with Google", signs in and consents
 * on the provider's pages, and lands on new_user_path with a new account
 * and an ordinary session.
 */
async function googleSignInNewUser(t) {
  await openApp(t);
  assert.equal((await app(t, 'authCheck')).body.isAuthenticated, false);
  const recorder = await recordResponses(t.page);
  try {
    await clickSignInWithGoogle(t);
    const { clicked, landed } = await throughProvider(t, t.oidcEmail);
    assert.deepEqual(clicked, ['login', 'consent'], 'the provider asked for login, then consent');
    t.state.oidcSession = await landedThroughCallback(t, {
      landed, recorder, path: '/onboarding/welcome', screen: 'Welcome to Flowtask',
    });
  } finally {
    await recorder.stop();
  }
  assert.notEqual(t.state.oidcSession, t.state.sessionValue, 'a new session');
  assert.deepEqual(await signedInAsOidcUser(t), [], 'a new account has no tasks');
  const created = await app(t, 'createTask', 'made after Sign in with Google');
  assert.equal(created.status, 201, created.text);
}

async function googleLogoutThen401(t) {
  const out = await app(t, 'logout');
  assert.equal(out.status, 200, `logout: ${out.text}`);
  assert.deepEqual((await app(t, 'authCheck')).body, { isAuthenticated: false });
  assert.equal((await app(t, 'listTasks')).status, 401, 'signed out: /api/v2 answers 401');
}

/**
 * Signed out of Gatehouse and of the provider (its cookies deleted), the
 * user signs in with Google again: login page once more, then
 * success_path, the same account (the task made before is there).
 */
async function googleSignInAgain(t) {
  const { issuer } = t.world.provider;
  const cdp = await t.page.createCDPSession();
  const { cookies } = await cdp.send('Network.getCookies', { urls: [issuer] });
  for (const c of cookies) await cdp.send('Network.deleteCookies', { name: c.name, url: issuer });
  await cdp.detach();
  await openApp(t);
  const recorder = await recordResponses(t.page);
  try {
    await clickSignInWithGoogle(t);
    const { clicked, landed } = await throughProvider(t, t.oidcEmail);
    assert.equal(clicked[0], 'login', `the provider asked for login again: ${clicked}`);
    const session = await landedThroughCallback(t, {
      landed, recorder, path: '/app/today', screen: 'Today',
    });
    assert.notEqual(session, t.state.oidcSession, 'a fresh session after logout');
  } finally {
    await recorder.stop();
  }
  assert.deepEqual(await signedInAsOidcUser(t), ['made after Sign in with Google'], 'the same account');
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
  ['Sign in with Google, cancelled at the provider', googleSignInCancelled],
  ['Sign in with Google: provider login and consent, new user', googleSignInNewUser],
  ['Sign in with Google: logout, then 401', googleLogoutThen401],
  ['Sign in with Google again: existing user', googleSignInAgain],
  ['screenshot of the final page', screenshot],
];
