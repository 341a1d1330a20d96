// The real-browser suite: Debian's headless Chromium runs the Flowtask
// client flow through a real Gatehouse (TLS), once over HTTP/2 and once over
// HTTP/1.1 (--disable-http2). Run with `npm test` from tests/browser, or via
// .ci/browser.sh, which installs Chromium and builds the binary first.
// Screenshots and logs stay in the printed work directory.

import { after, before, describe, test } from 'node:test';

import { launchBrowser, startWorld } from './harness.mjs';
import { STEPS } from './steps.mjs';

let world;

before(async () => {
  world = await startWorld();
  console.log(`# work directory (screenshots, logs): ${world.dir}`);
});

after(() => world && world.stop());

for (const protocol of ['h2', 'http/1.1']) {
  describe(`Flowtask client over ${protocol}`, () => {
    const t = {
      protocol,
      email: `browser-${protocol.replace(/\W/g, '')}@example.com`,
      password: 'correct horse battery',
      state: {},
    };
    let failed = false;

    before(async () => {
      t.world = world;
      t.browser = await launchBrowser(world.dir, { certs: world.certs, protocol });
      t.page = await t.browser.newPage();
    });

    after(async () => {
      if (t.browser) await t.browser.close();
    });

    for (const [name, step] of STEPS) {
      // A step after a failed one would only fail confusingly: skip it.
      test(name, async (ctx) => {
        if (failed) return ctx.skip('an earlier step failed');
        try {
          await step(t);
        } catch (e) {
          failed = true;
          throw e;
        }
      });
    }
  });
}
