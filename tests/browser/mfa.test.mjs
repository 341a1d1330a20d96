// Second factors in the real browser: Debian's headless Chromium, the
// Flowtask-style page, a real Gatehouse over TLS, once over HTTP/2 and once
// over HTTP/1.1. TOTP codes are computed here by an independent
// implementation (npm otpauth) from the secret Gatehouse hands out.
//
// Passkeys run against Chromium's DevTools virtual authenticator (CTAP2,
// resident keys, user verification): registration, passwordless sign-in
// with a discoverable credential, the passkey as the second factor after a
// password, deletion, a signature counter rolled back, and credentials
// made on another origin.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import * as OTPAuth from 'otpauth';

import { GATEHOUSE, launchBrowser, startWorld } from './harness.mjs';

const PASSWORD = 'correct horse battery';
let world;

before(async () => {
  world = await startWorld({ provider: false, extraToml: '[mfa]\nissuer = "Flowtask"\n' });
  console.log(`# work directory (screenshots, logs): ${world.dir}`);
});

after(() => world && world.stop());

/** `fetch` from the page, as the Flowtask client makes its calls. */
const call = (t, method, path, body) => t.page.evaluate(async (m, p, b) => {
  const init = { method: m, credentials: 'include', headers: {} };
  if (b !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(b);
  }
  const resp = await fetch(p, init);
  const text = await resp.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: resp.status, body: json, text };
}, method, path, body);

/** The code for `steps` 30-second steps from now. */
const codeAt = (t, steps) => t.totp.generate({ timestamp: Date.now() + steps * 30_000 });

async function storedCookies(t) {
  const cdp = await t.page.createCDPSession();
  const { cookies } = await cdp.send('Network.getCookies', { urls: [world.gatehouse.origin] });
  await cdp.detach();
  return cookies;
}

for (const protocol of ['h2', 'http/1.1']) {
  describe(`TOTP in Chromium over ${protocol}`, () => {
    const t = { protocol, email: `totp-${protocol.replace(/\W/g, '')}@example.com` };

    before(async () => {
      t.browser = await launchBrowser(world.dir, { certs: world.certs, protocol });
      t.page = await t.browser.newPage();
      const resp = await t.page.goto(`${world.gatehouse.origin}/`, { waitUntil: 'load' });
      assert.equal(resp.status(), 200);
      await t.page.waitForFunction(() => window.flowtask !== undefined);
    });

    after(async () => {
      if (t.browser) await t.browser.close();
    });

    test('sign up, set up TOTP with the app, enable it with its first code', async () => {
      assert.equal((await call(t, 'POST', '/api/v1/user/signup/send-otp', { email: t.email })).status, 200);
      const code = await world.smtp.codeFor(t.email);
      const verified = await call(t, 'POST', '/api/v1/user/signup/verify', { email: t.email, code, password: PASSWORD });
      assert.equal(verified.status, 200, verified.text);

      const setup = await call(t, 'POST', '/api/v1/user/2fa/totp/setup', { password: PASSWORD });
      assert.equal(setup.status, 200, setup.text);
      // The app reads the otpauth:// URL as a QR code would give it.
      t.totp = OTPAuth.URI.parse(setup.body.otpauthUrl);
      assert.equal(t.totp.issuer, 'Flowtask');
      assert.equal(t.totp.label, t.email);
      assert.equal(t.totp.secret.base32.replace(/=+$/, ''), setup.body.secret.replace(/=+$/, ''));
      assert.equal(t.totp.digits, 6);
      assert.equal(t.totp.period, 30);

      const enabled = await call(t, 'POST', '/api/v1/user/2fa/totp/enable', { code: codeAt(t, -1) });
      assert.equal(enabled.status, 200, enabled.text);
      assert.equal(enabled.body.recoveryCodes.length, 10);
      t.recoveryCodes = enabled.body.recoveryCodes;
      // The browser's session was renewed, and still works.
      const check = await call(t, 'GET', '/api/v1/auth-check');
      assert.deepEqual(check.body, { isAuthenticated: true, email: t.email });
    });

    test('password sign-in stops at the second factor with a __Host- pending cookie', async () => {
      assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
      const signIn = await call(t, 'POST', '/api/v1/user/signin', { email: t.email, password: PASSWORD });
      assert.equal(signIn.status, 200, signIn.text);
      assert.deepEqual(signIn.body, {
        msg: 'Second factor required', mfaRequired: true, methods: ['totp', 'passkey', 'recovery'],
      });
      const cookies = await storedCookies(t);
      const pending = cookies.find((c) => c.name === '__Host-gatehouse_session_mfa');
      assert.ok(pending, `pending cookie stored: ${JSON.stringify(cookies.map((c) => c.name))}`);
      assert.equal(pending.httpOnly, true);
      assert.equal(pending.secure, true);
      assert.equal(pending.sameSite, 'Strict');
      const minutes = (pending.expires * 1000 - Date.now()) / 60_000;
      assert.ok(minutes > 4 && minutes <= 5.1, `pending cookie lives 5 minutes (${minutes})`);
      assert.ok(!cookies.some((c) => c.name === '__Host-gatehouse_session'), 'no session yet');
      const check = await call(t, 'GET', '/api/v1/auth-check');
      assert.deepEqual(check.body, { isAuthenticated: false });
    });

    test('the code completes it; the same code again is refused', async () => {
      t.used = codeAt(t, 0);
      const done = await call(t, 'POST', '/api/v1/user/signin/2fa', { code: t.used });
      assert.equal(done.status, 200, done.text);
      const check = await call(t, 'GET', '/api/v1/auth-check');
      assert.deepEqual(check.body, { isAuthenticated: true, email: t.email });
      const cookies = await storedCookies(t);
      assert.ok(!cookies.some((c) => c.name === '__Host-gatehouse_session_mfa'), 'pending cookie cleared');

      assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
      await call(t, 'POST', '/api/v1/user/signin', { email: t.email, password: PASSWORD });
      const replay = await call(t, 'POST', '/api/v1/user/signin/2fa', { code: t.used });
      assert.equal(replay.status, 400, replay.text);
      assert.equal(replay.body.message, 'Invalid authentication code');
      const stillOut = await call(t, 'GET', '/api/v1/auth-check');
      assert.deepEqual(stillOut.body, { isAuthenticated: false });
    });

    test('a recovery code completes it once', async () => {
      const done = await call(t, 'POST', '/api/v1/user/signin/2fa', { recoveryCode: t.recoveryCodes[0] });
      assert.equal(done.status, 200, done.text);
      assert.equal((await call(t, 'GET', '/api/v1/auth-check')).body.isAuthenticated, true);
      assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
      await call(t, 'POST', '/api/v1/user/signin', { email: t.email, password: PASSWORD });
      const again = await call(t, 'POST', '/api/v1/user/signin/2fa', { recoveryCode: t.recoveryCodes[0] });
      assert.equal(again.status, 400, again.text);
    });

    test(`every call went over ${protocol}`, async () => {
      const seen = await t.page.evaluate(() => window.flowtask.protocols());
      const calls = seen.filter((e) => e.name.includes('/api/v1/'));
      assert.ok(calls.length >= 10, `there were API calls: ${JSON.stringify(seen)}`);
      for (const e of calls) assert.equal(e.protocol, protocol, `${e.name} over ${e.protocol}`);
    });
  });
}

/** Registers a passkey from whatever origin the tab shows; returns `toJSON()`. */
const createCredential = (t, publicKey) => t.page.evaluate(async (options) => {
  const cred = await navigator.credentials.create({
    publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
  });
  return cred.toJSON();
}, publicKey);

const getCredential = (t, publicKey) => t.page.evaluate(async (options) => {
  const cred = await navigator.credentials.get({
    publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options),
  });
  return cred.toJSON();
}, publicKey);

/** The passkey sign-in as a client runs it: start, the authenticator, finish. */
async function passkeySignIn(t) {
  const start = await call(t, 'POST', '/api/v1/user/passkeys/login/start', {});
  assert.equal(start.status, 200, start.text);
  const credential = await getCredential(t, start.body.publicKey);
  return call(t, 'POST', '/api/v1/user/passkeys/login/finish', { credential });
}

async function gotoOrigin(t, origin) {
  const resp = await t.page.goto(`${origin}/`, { waitUntil: 'load' });
  assert.ok(resp.ok(), `${origin} loads`);
}

describe('Passkeys in Chromium over h2 (DevTools virtual authenticator)', () => {
  const t = { protocol: 'h2', email: 'passkey-h2@example.com' };

  before(async () => {
    t.browser = await launchBrowser(world.dir, { certs: world.certs, protocol: 'h2' });
    // A fresh context: no cookies left by the TOTP browser (same profile).
    const context = await t.browser.createBrowserContext();
    t.page = await context.newPage();
    t.cdp = await t.page.createCDPSession();
    await t.cdp.send('WebAuthn.enable');
    const { authenticatorId } = await t.cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: {
        protocol: 'ctap2',
        // CTAP 2.1: credProtect, which Gatehouse's creation options enforce.
        ctap2Version: 'ctap2_1',
        transport: 'internal',
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });
    t.authenticatorId = authenticatorId;
    await gotoOrigin(t, world.gatehouse.origin);
    await t.page.waitForFunction(() => window.flowtask !== undefined);
  });

  after(async () => {
    if (t.browser) await t.browser.close();
  });

  test('register a passkey while signed in', async () => {
    assert.equal((await call(t, 'POST', '/api/v1/user/signup/send-otp', { email: t.email })).status, 200);
    const code = await world.smtp.codeFor(t.email);
    const verified = await call(t, 'POST', '/api/v1/user/signup/verify', { email: t.email, code, password: PASSWORD });
    assert.equal(verified.status, 200, verified.text);

    const start = await call(t, 'POST', '/api/v1/user/passkeys/register/start', {});
    assert.equal(start.status, 200, start.text);
    const options = start.body.publicKey;
    assert.equal(options.rp.id, 'localhost');
    assert.ok(options.challenge.length >= 16, 'a random challenge');
    const credential = await createCredential(t, options);
    const finish = await call(t, 'POST', '/api/v1/user/passkeys/register/finish', { credential, name: 'Laptop' });
    assert.equal(finish.status, 200, finish.text);
    assert.equal(finish.body.name, 'Laptop');
    t.passkeyId = finish.body.id;
    // The same challenge cannot be used twice.
    const again = await call(t, 'POST', '/api/v1/user/passkeys/register/finish', { credential, name: 'Again' });
    assert.equal(again.status, 400, again.text);

    const list = await call(t, 'GET', '/api/v1/user/passkeys');
    assert.equal(list.status, 200);
    assert.equal(list.body.passkeys.length, 1);
    assert.equal(list.body.passkeys[0].id, t.passkeyId);
    assert.equal(list.body.passkeys[0].lastUsedAt, null);
    const { credentials } = await t.cdp.send('WebAuthn.getCredentials', { authenticatorId: t.authenticatorId });
    assert.equal(credentials.length, 1);
    assert.equal(credentials[0].isResidentCredential, true, 'discoverable');
    // The operator sees it by name (through the running server's admin socket).
    const { stdout } = await promisify(execFile)(GATEHOUSE, [
      'user', 'show', t.email, '--config', path.join(world.dir, 'gatehouse.toml'),
    ]);
    assert.match(stdout, /second factors: passkeys: Laptop, 0 recovery codes left/);
  });

  test('sign in without a password, with the discoverable credential', async () => {
    assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
    const done = await passkeySignIn(t);
    assert.equal(done.status, 200, done.text);
    const check = await call(t, 'GET', '/api/v1/auth-check');
    assert.deepEqual(check.body, { isAuthenticated: true, email: t.email });
    const list = await call(t, 'GET', '/api/v1/user/passkeys');
    assert.notEqual(list.body.passkeys[0].lastUsedAt, null, 'last use recorded');
  });

  test('a passkey sign-in from a browser the account has not seen sends the new sign-in notice', async () => {
    // The sign-in above came from the browser that signed up: it carries
    // the account's device mark, so it got no notice.
    const isNotice = (m) => /^Subject: New sign-in to your/mi.test(m);
    assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
    await t.page.deleteCookie({ name: '__Host-gatehouse_session_device', url: world.gatehouse.origin });
    const done = await passkeySignIn(t);
    assert.equal(done.status, 200, done.text);
    const notices = await world.smtp.waitForMails(`a new sign-in notice to ${t.email}`, t.email, isNotice);
    assert.equal(notices.length, 1, 'one notice: the known browser\'s sign-in sent none');
    const cookies = await t.page.cookies(world.gatehouse.origin);
    assert.ok(cookies.some((c) => c.name === '__Host-gatehouse_session_device'), 'the browser is marked again');
  });

  test('after the password, the passkey is the second factor', async () => {
    assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
    const signIn = await call(t, 'POST', '/api/v1/user/signin', { email: t.email, password: PASSWORD });
    assert.equal(signIn.status, 200, signIn.text);
    assert.equal(signIn.body.mfaRequired, true, signIn.text);
    assert.deepEqual((await call(t, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: false });
    // login/start carries the pending cookie: the ceremony is bound to it.
    const done = await passkeySignIn(t);
    assert.equal(done.status, 200, done.text);
    assert.deepEqual((await call(t, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: true, email: t.email });
  });

  test('a credential used on another origin is refused', async () => {
    // Options from Gatehouse, the ceremony on a different origin of the
    // same host (RP ID localhost is valid there), the answer to Gatehouse.
    const start = await call(t, 'POST', '/api/v1/user/passkeys/login/start', {});
    const register = await call(t, 'POST', '/api/v1/user/passkeys/register/start', {});
    assert.equal(register.status, 200, register.text);
    const all = async () => (await t.cdp.send('WebAuthn.getCredentials', { authenticatorId: t.authenticatorId }))
      .credentials;
    // A new resident credential for the same user replaces the old one in
    // the authenticator: keep it, to put it back afterwards.
    const saved = await all();
    assert.equal(saved.length, 1);
    await gotoOrigin(t, world.foreign.sameSite);
    const assertion = await getCredential(t, start.body.publicKey);
    // register/start lists the registered passkey in excludeCredentials, so
    // this authenticator would refuse: empty it first (put back below).
    assert.equal(register.body.publicKey.excludeCredentials.length, 1);
    await t.cdp.send('WebAuthn.clearCredentials', { authenticatorId: t.authenticatorId });
    const created = await createCredential(t, register.body.publicKey);
    await gotoOrigin(t, world.gatehouse.origin);
    const login = await call(t, 'POST', '/api/v1/user/passkeys/login/finish', { credential: assertion });
    assert.equal(login.status, 400, login.text);
    const finish = await call(t, 'POST', '/api/v1/user/passkeys/register/finish', { credential: created, name: 'Foreign' });
    assert.equal(finish.status, 400, finish.text);
    const list = await call(t, 'GET', '/api/v1/user/passkeys');
    assert.equal(list.body.passkeys.length, 1, 'nothing registered from the other origin');
    // Put the authenticator back as it was: only the registered passkey.
    await t.cdp.send('WebAuthn.clearCredentials', { authenticatorId: t.authenticatorId });
    await t.cdp.send('WebAuthn.addCredential', { authenticatorId: t.authenticatorId, credential: saved[0] });
    assert.equal((await all()).length, 1);
  });

  test('a signature counter that goes backwards is refused', async () => {
    const { credentials } = await t.cdp.send('WebAuthn.getCredentials', { authenticatorId: t.authenticatorId });
    assert.equal(credentials.length, 1);
    const [registered] = credentials;
    assert.ok(registered.signCount >= 2, `the counter grew with each use (${registered.signCount})`);
    // Put the same key back with its counter rolled back: a cloned authenticator.
    await t.cdp.send('WebAuthn.removeCredential', { authenticatorId: t.authenticatorId, credentialId: registered.credentialId });
    await t.cdp.send('WebAuthn.addCredential', {
      authenticatorId: t.authenticatorId,
      credential: { ...registered, signCount: 0 },
    });
    assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
    const cloned = await passkeySignIn(t);
    assert.equal(cloned.status, 400, cloned.text);
    assert.ok(
      world.gatehouse.lines.some((l) => l.includes('gatehouse::security') && l.includes('signature counter')),
      'the rollback is logged on gatehouse::security',
    );
    // The counter moves past the stored value: accepted again.
    await t.cdp.send('WebAuthn.removeCredential', { authenticatorId: t.authenticatorId, credentialId: registered.credentialId });
    await t.cdp.send('WebAuthn.addCredential', {
      authenticatorId: t.authenticatorId,
      credential: { ...registered, signCount: registered.signCount + 10 },
    });
    const ok = await passkeySignIn(t);
    assert.equal(ok.status, 200, ok.text);
  });

  test('a deleted passkey no longer signs in', async () => {
    const other = await call(t, 'DELETE', '/api/v1/user/passkeys/0000000000000000');
    assert.equal(other.status, 404, other.text);
    const removed = await call(t, 'DELETE', `/api/v1/user/passkeys/${t.passkeyId}`);
    assert.equal(removed.status, 200, removed.text);
    assert.deepEqual((await call(t, 'GET', '/api/v1/user/passkeys')).body, { passkeys: [] });
    assert.equal((await call(t, 'POST', '/api/v1/user/logout')).status, 200);
    const refused = await passkeySignIn(t);
    assert.equal(refused.status, 400, refused.text);
    assert.deepEqual((await call(t, 'GET', '/api/v1/auth-check')).body, { isAuthenticated: false });
    // Without factors, the password alone signs in again.
    const signIn = await call(t, 'POST', '/api/v1/user/signin', { email: t.email, password: PASSWORD });
    assert.equal(signIn.status, 200);
    assert.equal(signIn.body.mfaRequired, undefined, signIn.text);
  });

  test('every call went over h2', async () => {
    const seen = await t.page.evaluate(() => window.flowtask.protocols());
    const calls = seen.filter((e) => e.name.includes('/api/v1/'));
    assert.ok(calls.length >= 5, `there were API calls: ${JSON.stringify(seen)}`);
    for (const e of calls) assert.equal(e.protocol, 'h2', `${e.name} over ${e.protocol}`);
  });
});
