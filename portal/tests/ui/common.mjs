// What every browser script shares: Chromium from the environment (CHROMIUM, PLAYWRIGHT),
// screenshots into SCREENSHOTS, TAP-style steps, and polling inside the page.

import { createRequire } from 'node:module';
import path from 'node:path';

const { CHROMIUM, PLAYWRIGHT, SCREENSHOTS } = process.env;

// No sandbox: CI runs as root. Autoplay: players are started by a script click.
export async function launch() {
  const { chromium } = createRequire(import.meta.url)(PLAYWRIGHT);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
  });
}

export const step = (s) => console.log(`ok - ${s}`);

export async function shot(page, name) {
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot ${file}`);
}

// Polls `fn` in the page until it returns true. Playwright's waitForFunction evaluates a string
// inside the page, which the portal's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
export async function until(page, fn, arg, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await page.evaluate(fn, arg).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${fn}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
