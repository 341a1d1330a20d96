// The built-in pages (issue 20) in Debian's headless Chromium: a browser
// opens a protected page, is sent to Gatehouse's sign-in page, signs up or
// signs in with the forms and lands on the page it asked for — once with
// JavaScript and once with JavaScript disabled, the second time with the
// keyboard alone. Every page passes axe-core (pinned npm package, injected
// as a file; CSP bypass only in this test, the pages' CSP is not weakened)
// with no serious or critical violation, fits 320 px without sideways
// scrolling, and is screenshotted at 320 px and 1280 px under
// $BROWSER_ARTIFACTS.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { launchBrowser, startWorld } from './harness.mjs';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

// /app/ (served by the test upstream) needs a session; /app/ops/ needs the
// "ops" group, which nobody has: the no-access page.
const PAGES_TOML = `
[pages]
title = "Flowtask"
[[route]]
prefix = "/app/"
auth = "required"
[[route]]
prefix = "/app/ops/"
auth = "required"
allow_groups = ["ops"]
`;

const EMAIL = 'pages-user@example.com';
const PASSWORD = 'correct horse battery';
const TARGET = '/app/today?tab=2';

let world;
let browser;

before(async () => {
  world = await startWorld({ gatehouseToml: PAGES_TOML });
  console.log(`# work directory (screenshots, logs): ${world.dir}`);
  browser = await launchBrowser(world.dir, { certs: world.certs, protocol: 'h2' });
});

after(async () => {
  if (browser) await browser.close();
  if (world) world.stop();
});

const url = (p) => `${world.gatehouse.origin}${p}`;
const here = (page) => { const u = new URL(page.url()); return u.pathname + u.search; };

async function submit(page, selector = 'button[type="submit"]') {
  const [resp] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click(selector),
  ]);
  return resp;
}

/** axe-core on the current page: no serious or critical violation. */
async function accessible(page, name) {
  await page.addScriptTag({ path: AXE });
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }));
  });
  const bad = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${name}: ${JSON.stringify(bad)}`);
}

/** Screenshots at 320 px and 1280 px; at 320 px nothing scrolls sideways. */
async function screenshots(page, name) {
  for (const width of [320, 1280]) {
    await page.setViewport({ width, height: 800 });
    const file = path.join(world.dir, `pages-${name}-${width}.png`);
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 1000, `${file} written`);
    if (width === 320) {
      const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(scroll <= 320, `${name}: ${scroll} px wide at 320 px`);
    }
  }
  await page.setViewport({ width: 1280, height: 800 });
}

/** Both checks on the page the browser shows now. */
async function checkPage(page, name) {
  await accessible(page, name);
  await screenshots(page, name);
}

describe('built-in pages with JavaScript', () => {
  let page;
  before(async () => {
    page = await browser.newPage();
    // Only so that axe-core can be injected; the pages' own CSP stays strict.
    await page.setBypassCSP(true);
  });

  test('a protected page sends the browser to sign-in with rd', async () => {
    const resp = await page.goto(url(TARGET), { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    assert.equal(here(page), `/_gatehouse/sign-in?rd=${encodeURIComponent(TARGET).replace(/%2F/g, '/')}`);
    const headers = resp.headers();
    assert.match(headers['content-security-policy'], /default-src 'none'/);
    assert.equal(headers['x-frame-options'], 'DENY');
    assert.equal(await page.$eval('h1', (h) => h.textContent), 'Sign in');
    await checkPage(page, 'sign-in');
  });

  test('"Sign in with google" is a plain link that reaches the OpenID provider', async () => {
    const signIn = page.url();
    const href = await page.$eval('a.button.secondary', (a) => a.getAttribute('href'));
    assert.ok(href.startsWith('/_gatehouse/oidc/google?rd='), href);
    await submit(page, 'a.button.secondary');
    assert.equal(new URL(page.url()).origin, new URL(world.provider.issuer).origin);
    await page.goto(signIn, { waitUntil: 'load' });
  });

  test('sign up with the emailed code and land on the page asked for', async () => {
    await submit(page, 'a[href^="/_gatehouse/sign-up"]');
    assert.ok(here(page).startsWith('/_gatehouse/sign-up?rd='), here(page));
    await checkPage(page, 'sign-up');
    await page.type('#email', EMAIL);
    await submit(page);
    assert.equal(await page.$eval('h1', (h) => h.textContent), 'Check your email');
    await checkPage(page, 'sign-up-code');
    const code = await world.smtp.codeFor(EMAIL);
    await page.type('#code', code);
    await page.type('#password', PASSWORD);
    await submit(page);
    assert.equal(here(page), TARGET);
    const landed = world.upstream.records.filter((r) => r.url === TARGET).at(-1);
    assert.ok(landed, 'the upstream served the original page');
    assert.equal(landed.user, EMAIL);
  });

  test('the no-access page for a user without the group', async () => {
    await page.goto(url('/app/ops/'), { waitUntil: 'load' });
    assert.equal(await page.$eval('h1', (h) => h.textContent), 'No access');
    await checkPage(page, 'no-access');
  });

  test('sign out with the form, then the signed-out page', async () => {
    await page.goto(url('/_gatehouse/sign-out'), { waitUntil: 'load' });
    await checkPage(page, 'sign-out');
    await submit(page);
    assert.equal(here(page), '/_gatehouse/signed-out');
    await checkPage(page, 'signed-out');
    const resp = await page.goto(url(TARGET), { waitUntil: 'load' });
    assert.ok(here(page).startsWith('/_gatehouse/sign-in'), 'signed out for real');
    assert.equal(resp.status(), 200);
    await page.type('#email', EMAIL);
    await page.type('#password', 'not the password');
    const wrong = await submit(page);
    assert.equal(wrong.status(), 400);
    assert.ok(await page.$('[role="alert"]'), 'the error is announced');
    await checkPage(page, 'sign-in-error');
  });

  test('forgot password and reset pages', async () => {
    await page.goto(url('/_gatehouse/forgot'), { waitUntil: 'load' });
    await checkPage(page, 'forgot');
    await page.type('#email', EMAIL);
    await submit(page);
    assert.equal(await page.$eval('h1', (h) => h.textContent), 'Choose a new password');
    await checkPage(page, 'reset');
  });
});

describe('built-in pages without JavaScript, keyboard only', () => {
  let page;
  before(async () => {
    page = await browser.newPage();
    await page.setJavaScriptEnabled(false);
  });

  test('redirected, signs in with the form, lands on the original page', async () => {
    await page.goto(url(TARGET), { waitUntil: 'load' });
    assert.ok(here(page).startsWith('/_gatehouse/sign-in?rd='), here(page));
    // Tab to the email field: nothing is focusable in a surprising order.
    let focused = null;
    for (let i = 0; i < 10 && focused !== 'email'; i += 1) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    }
    assert.equal(focused, 'email');
    await page.keyboard.type(EMAIL);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'password');
    await page.keyboard.type(PASSWORD);
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.keyboard.press('Enter'),
    ]);
    assert.equal(here(page), TARGET);
    const landed = world.upstream.records.filter((r) => r.url === TARGET).at(-1);
    assert.ok(landed, 'the upstream served the original page');
    assert.equal(landed.user, EMAIL);
    await screenshots(page, 'landed-nojs');
  });
});
