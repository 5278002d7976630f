// A meeting attendee in Chromium, against a running portal (started by tests/ui.rs): the user
// who joined an 8-second meeting at 4 s finds it, sees when each participant joined and left,
// and plays only their part, which Chromium demuxes and decodes as a stream of its own.
// Environment: BASE_URL, CHROMIUM, PLAYWRIGHT, PASSWORD (of `dave`), MEETING_ID, SCREENSHOTS.

import assert from 'node:assert/strict';
import { launch, shot, step, until } from './common.mjs';

const { BASE_URL, PASSWORD, MEETING_ID } = process.env;
const browser = await launch();

try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(BASE_URL);
  await page.fill('#f-username', 'dave');
  await page.fill('#f-password', PASSWORD);
  await page.click('#login button[type=submit]');
  await page.waitForSelector(`#calls tr[data-id="${MEETING_ID}"]`);
  step('the attendee finds the meeting among their own calls');

  await page.click(`#calls tr[data-id="${MEETING_ID}"]`);
  await page.waitForSelector('#details');
  const people = await page.textContent('#participants');
  assert.match(people, /2002 \(Carol\) — left at 0:03/);
  assert.match(people, /3003 \(Dave\) — joined at 0:04/);
  assert.match(await page.textContent('#part'), /you hear 0:04 to the end/);
  assert.equal(await page.locator('#download').count(), 0);
  step('the meeting shows who joined and left when, the part the attendee hears, and no download');

  await page.click('#play');
  await until(page, () => document.getElementById('audio').currentTime > 0.5, null, 20000);
  const duration = await page.evaluate(() => document.getElementById('audio').duration);
  // 4 to 8 s, kept to the recorder's one-second pages.
  assert.ok(duration >= 3.5 && duration <= 5.5, `the part lasts ${duration} s`);
  step(`Chromium plays the attendee's part: ${duration.toFixed(2)} s of the 8-second meeting`);
  await shot(page, 'meeting-part');
} catch (e) {
  for (const ctx of browser.contexts()) for (const p of ctx.pages()) await shot(p, 'meeting-failure').catch(() => {});
  throw e;
} finally {
  await browser.close();
}
