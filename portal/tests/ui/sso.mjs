// Single sign-on in Chromium, against a running portal with OpenID Connect configured (started
// by tests/ui.rs) and the test provider (tests/idp/idp.mjs): the sign-in page offers the
// provider by name, the button goes through the provider's own login and consent pages, and
// the browser comes back signed in on the interactions list.
// Environment: BASE_URL, CHROMIUM, PLAYWRIGHT, SCREENSHOTS, PROVIDER (its display name),
// IDP_USER and IDP_PASSWORD (an account at the provider), CALL_ID (a call the user may see).

import assert from 'node:assert/strict';
import { launch, shot, step } from './common.mjs';

const { BASE_URL, PROVIDER, IDP_USER, IDP_PASSWORD, CALL_ID } = process.env;
const browser = await launch();

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('response', (r) => console.log(`${r.request().method()} ${r.url()} ${r.status()}`));

  await page.goto(BASE_URL);
  await page.waitForSelector('#login #sso');
  assert.equal((await page.textContent('#sso')).trim(), `Sign in with ${PROVIDER}`);
  // Local sign-in stays beside it.
  assert.equal(await page.locator('#f-username').count(), 1);
  assert.equal(await page.locator('#f-password').count(), 1);
  step('the sign-in page offers the provider by name, and local sign-in');
  await shot(page, 'sso-01-sign-in');

  await page.click('#sso');
  // The provider's login form (its own page, on its own origin).
  await page.waitForSelector('input[name=login]');
  assert.notEqual(new URL(page.url()).origin, new URL(BASE_URL).origin);
  await page.fill('input[name=login]', IDP_USER);
  await page.fill('input[name=password]', IDP_PASSWORD);
  await shot(page, 'sso-02-provider-login');
  await page.click('button[type=submit]');
  // Its consent page.
  await page.waitForSelector('text=Continue');
  await page.click('button[type=submit]');
  step('the button leads through the provider\'s login and consent pages');

  // Back at the portal, signed in, on the interactions list with the user's call.
  await page.waitForSelector(`#calls tr[data-id="${CALL_ID}"]`);
  assert.equal(new URL(page.url()).origin, new URL(BASE_URL).origin);
  assert.equal(await page.locator('#top').isVisible(), true);
  assert.match(await page.textContent('#who'), /Alice Sso/);
  assert.equal(await page.locator('#login').count(), 0);
  step('back at the portal signed in as the provider\'s user, on the interactions list');
  await shot(page, 'sso-03-signed-in');

  // Signing out returns to the same choice.
  await page.click('#logout');
  await page.waitForSelector('#login #sso');
  step('signing out shows the sign-in page with the button again');
} finally {
  await browser.close();
}
