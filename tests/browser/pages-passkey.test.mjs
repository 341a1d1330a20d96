// "Sign in with a passkey" on the built-in pages (issues 19 and 20) in
// Debian's headless Chromium with the DevTools virtual authenticator
// (CTAP2, resident keys, user verification), over HTTP/2:
// - a passkey registered through the JSON API; signed out, the browser
//   opens a protected page, is sent to sign-in, clicks the passkey button
//   and lands on the page it asked for;
// - after the password form, the passkey completes the second-factor page,
//   which offers the passkey button and no code field (the user has no TOTP);
// - the same without the browser's WebAuthn JSON helpers (the script's own
//   base64url conversion);
// - a failure is shown in the page's role="alert" region and the browser
//   stays on the page;
// - register/start lists the user's passkeys in excludeCredentials, so the
//   same authenticator refuses to register twice, and asks for credProps;
//   a credential the browser reports as not discoverable is refused.
// The pages' own CSP is NOT bypassed here: the button works under it (no
// CSP violation is reported). axe-core is run through DevTools (not a
// script tag), with no serious or critical violation.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { launchBrowser, startWorld } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE_SOURCE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const PAGES_TOML = `
[pages]
title = "Flowtask"
[[route]]
prefix = "/app/"
auth = "required"
`;

const EMAIL = 'pages-passkey@example.com';
const PASSWORD = 'correct horse battery';
const TARGET = '/app/today?tab=3';

let world;
let browser;

before(async () => {
  world = await startWorld({ provider: false, gatehouseToml: PAGES_TOML });
  console.log(`# work directory (screenshots, logs): ${world.dir}`);
  browser = await launchBrowser(world.dir, { certs: world.certs, protocol: 'h2' });
});

after(async () => {
  if (browser) await browser.close();
  if (world) world.stop();
});

const url = (p) => `${world.gatehouse.origin}${p}`;
const here = (page) => { const u = new URL(page.url()); return u.pathname + u.search; };

/** `fetch` from the page, as a client makes its calls. */
const call = (page, method, p, body) => page.evaluate(async (m, target, b) => {
  const init = { method: m, credentials: 'include', headers: {} };
  if (b !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(b);
  }
  const resp = await fetch(target, init);
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: resp.status, body: json, text };
}, method, p, body);

/** navigator.credentials.create with the server's options; toJSON() or the error's name. */
const createCredential = (page, publicKey) => page.evaluate(async (options) => {
  try {
    const cred = await navigator.credentials.create({
      publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
    });
    return { credential: cred.toJSON() };
  } catch (e) {
    return { error: e.name };
  }
}, publicKey);

/** A tab in a fresh context with its own virtual authenticator. */
async function tabWithAuthenticator(options) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const cdp = await page.createCDPSession();
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      ...options,
    },
  });
  // Every CSP violation the page reports (the pages' CSP is not bypassed).
  const violations = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  return { context, page, cdp, authenticatorId, violations };
}

async function signUp(page, email) {
  const resp = await page.goto(url('/'), { waitUntil: 'load' });
  assert.ok(resp.ok(), 'the app loads');
  assert.equal((await call(page, 'POST', '/api/v1/user/signup/send-otp', { email })).status, 200);
  const code = await world.smtp.codeFor(email);
  const verified = await call(page, 'POST', '/api/v1/user/signup/verify', { email, code, password: PASSWORD });
  assert.equal(verified.status, 200, verified.text);
}

/** axe-core through DevTools (not subject to the page's CSP). */
async function accessible(page, name) {
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad)}`);
  await page.setViewport({ width: 320, height: 800 });
  await page.screenshot({ path: path.join(world.dir, `pages-passkey-${name}-320.png`), fullPage: true });
  await page.setViewport({ width: 1280, height: 800 });
}

async function click(page, selector) {
  const [resp] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click(selector),
  ]);
  return resp;
}

describe('passkey button on the built-in pages (Chromium, h2, virtual authenticator)', () => {
  const t = {};

  before(async () => {
    Object.assign(t, await tabWithAuthenticator({ hasResidentKey: true }));
  });

  after(async () => {
    if (t.context) await t.context.close();
  });

  test('register a passkey through the JSON API; register/start asks for credProps', async () => {
    await signUp(t.page, EMAIL);
    const start = await call(t.page, 'POST', '/api/v1/user/passkeys/register/start', {});
    assert.equal(start.status, 200, start.text);
    assert.deepEqual(start.body.publicKey.excludeCredentials, [], 'no passkey yet');
    assert.equal(start.body.publicKey.extensions.credProps, true, JSON.stringify(start.body.publicKey));
    const { credential, error } = await createCredential(t.page, start.body.publicKey);
    assert.equal(error, undefined);
    assert.equal(credential.clientExtensionResults.credProps.rk, true, 'discoverable');
    const finish = await call(t.page, 'POST', '/api/v1/user/passkeys/register/finish', { credential, name: 'Laptop' });
    assert.equal(finish.status, 200, finish.text);
    t.credentialId = credential.id;
    t.passkeyId = finish.body.id;
  });

  test('register/start excludes the registered passkey: the authenticator refuses a second one', async () => {
    const start = await call(t.page, 'POST', '/api/v1/user/passkeys/register/start', {});
    assert.equal(start.status, 200, start.text);
    const excluded = start.body.publicKey.excludeCredentials;
    assert.deepEqual(excluded.map((c) => c.id), [t.credentialId]);
    assert.equal(excluded[0].type, 'public-key');
    const { error } = await createCredential(t.page, start.body.publicKey);
    assert.equal(error, 'InvalidStateError', 'the same authenticator is not registered twice');
    const { credentials } = await t.cdp.send('WebAuthn.getCredentials', { authenticatorId: t.authenticatorId });
    assert.equal(credentials.length, 1);
    const list = await call(t.page, 'GET', '/api/v1/user/passkeys');
    assert.equal(list.body.passkeys.length, 1);
  });

  test('signed out, a protected page leads to sign-in; the passkey button lands on the page', async () => {
    assert.equal((await call(t.page, 'POST', '/api/v1/user/logout')).status, 200);
    const resp = await t.page.goto(url(TARGET), { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    assert.ok(here(t.page).startsWith('/_gatehouse/sign-in?rd='), here(t.page));
    const csp = resp.headers()['content-security-policy'];
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe/);
    // Rendered hidden, shown by the script because WebAuthn is there.
    await t.page.waitForSelector('#passkey-button', { visible: true });
    assert.equal(await t.page.$eval('#passkey-button', (b) => b.textContent), 'Sign in with a passkey');
    await accessible(t.page, 'sign-in');
    await click(t.page, '#passkey-button');
    assert.equal(here(t.page), TARGET);
    const landed = world.upstream.records.filter((r) => r.url === TARGET).at(-1);
    assert.ok(landed, 'the upstream served the original page');
    assert.equal(landed.user, EMAIL);
    const check = await call(t.page, 'GET', '/api/v1/auth-check');
    assert.deepEqual(check.body, { isAuthenticated: true, email: EMAIL });
  });

  test('after the password form, the passkey completes the second-factor page', async () => {
    assert.equal((await call(t.page, 'POST', '/api/v1/user/logout')).status, 200);
    await t.page.goto(url(TARGET), { waitUntil: 'load' });
    assert.ok(here(t.page).startsWith('/_gatehouse/sign-in?rd='), here(t.page));
    await t.page.type('#email', EMAIL);
    await t.page.type('#password', PASSWORD);
    await click(t.page, 'form button[type="submit"]');
    assert.ok(here(t.page).startsWith('/_gatehouse/second-factor?rd='), here(t.page));
    assert.equal(await t.page.$eval('h1', (h) => h.textContent), 'Second step');
    await t.page.waitForSelector('#passkey-button', { visible: true });
    // A passkey and no TOTP: the button, and no code field to fill in.
    assert.equal(await t.page.$('#code'), null, 'no code field for a passkey-only user');
    assert.deepEqual((await call(t.page, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: false });
    await accessible(t.page, 'second-factor');
    await click(t.page, '#passkey-button');
    assert.equal(here(t.page), TARGET);
    assert.deepEqual((await call(t.page, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: true, email: EMAIL });
    const cookies = (await t.page.cookies()).map((c) => c.name);
    assert.ok(!cookies.includes('__Host-gatehouse_session_mfa'), `pending cookie cleared: ${cookies}`);
  });

  test('a browser without the WebAuthn JSON helpers: the script converts base64url itself', async () => {
    assert.equal((await call(t.page, 'POST', '/api/v1/user/logout')).status, 200);
    await t.page.goto(url(TARGET), { waitUntil: 'load' });
    await t.page.waitForSelector('#passkey-button', { visible: true });
    // As in browsers that predate parseRequestOptionsFromJSON and toJSON().
    const removed = await t.page.evaluate(() => {
      delete PublicKeyCredential.parseRequestOptionsFromJSON;
      delete PublicKeyCredential.prototype.toJSON;
      return typeof PublicKeyCredential.parseRequestOptionsFromJSON === 'undefined'
        && typeof PublicKeyCredential.prototype.toJSON === 'undefined';
    });
    assert.equal(removed, true);
    await click(t.page, '#passkey-button');
    assert.equal(here(t.page), TARGET);
    assert.deepEqual((await call(t.page, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: true, email: EMAIL });
  });

  test('a refused passkey is announced in the alert region and the page stays', async () => {
    // The passkey is deleted on the server but still in the authenticator.
    const removed = await call(t.page, 'DELETE', `/api/v1/user/passkeys/${t.passkeyId}`);
    assert.equal(removed.status, 200, removed.text);
    assert.equal((await call(t.page, 'POST', '/api/v1/user/logout')).status, 200);
    await t.page.goto(url(TARGET), { waitUntil: 'load' });
    const signIn = here(t.page);
    assert.ok(signIn.startsWith('/_gatehouse/sign-in?rd='), signIn);
    await t.page.waitForSelector('#passkey-button', { visible: true });
    assert.equal(await t.page.$eval('[role="alert"]', (e) => e.hidden), true, 'no error yet');
    await t.page.click('#passkey-button');
    await t.page.waitForSelector('[role="alert"]:not([hidden])');
    assert.equal(await t.page.$eval('[role="alert"]', (e) => e.textContent), 'Passkey verification failed');
    assert.equal(here(t.page), signIn);
    assert.equal(await t.page.$eval('#passkey-button', (b) => b.disabled), false, 'the button can be tried again');
    assert.deepEqual((await call(t.page, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: false });
    await accessible(t.page, 'sign-in-passkey-error');
  });

  test('the pages\u2019 CSP let the script and its calls run (no violation reported)', () => {
    assert.deepEqual(t.violations, []);
  });
});

describe('a credential that is not discoverable is refused at register/finish', () => {
  const t = {};

  before(async () => {
    // An authenticator without resident keys: with residentKey "preferred"
    // it makes a server-side credential, and Chromium reports rk: false.
    Object.assign(t, await tabWithAuthenticator({ hasResidentKey: false }));
  });

  after(async () => {
    if (t.context) await t.context.close();
  });

  test('400 with a clear message; nothing registered', async () => {
    await signUp(t.page, 'non-discoverable@example.com');
    const start = await call(t.page, 'POST', '/api/v1/user/passkeys/register/start', {});
    assert.equal(start.status, 200, start.text);
    const { credential, error } = await createCredential(t.page, start.body.publicKey);
    assert.equal(error, undefined);
    assert.equal(credential.clientExtensionResults.credProps.rk, false, 'the browser says: not discoverable');
    const finish = await call(t.page, 'POST', '/api/v1/user/passkeys/register/finish', { credential, name: 'Key' });
    assert.equal(finish.status, 400, finish.text);
    assert.match(finish.body.message, /not discoverable/);
    assert.equal(finish.body.msg, finish.body.message);
    const list = await call(t.page, 'GET', '/api/v1/user/passkeys');
    assert.deepEqual(list.body, { passkeys: [] });
  });
});
