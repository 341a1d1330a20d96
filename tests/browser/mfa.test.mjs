// Second factors in the real browser: Debian's headless Chromium, the
// Flowtask-style page, a real Gatehouse over TLS, once over HTTP/2 and once
// over HTTP/1.1. TOTP codes are computed here by an independent
// implementation (npm otpauth) from the secret Gatehouse hands out.
//
// Passkeys (WebAuthn with the DevTools virtual authenticator) are not here
// yet: Gatehouse does not serve the passkey endpoints (see SECURITY.md).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as OTPAuth from 'otpauth';

import { launchBrowser, startWorld } from './harness.mjs';

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
