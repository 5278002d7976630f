// The supervisor's workflow in Chromium, against a running portal (started by tests/ui.rs).
// Environment: BASE_URL, CHROMIUM (browser binary), PLAYWRIGHT (playwright-core directory),
// PASSWORD (of the users `supervisor` and `reviewer`), CALL_ID (the call from 1001 to 2002),
// MEDIA_SHA256 (of the call's decrypted Ogg/Opus), SCREENSHOTS (a directory for the screenshots),
// and what the admin screens must show (see below).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { launch, shot, step, until } from './common.mjs';

const { BASE_URL, PASSWORD, CALL_ID, MEDIA_SHA256 } = process.env;
// Two calls being recorded during the run (calling numbers and ids), an active alarm and a
// cleared one.
const { SUPERVISOR_LIVE, SUPERVISOR_LIVE_ID, REVIEWER_LIVE, REVIEWER_LIVE_ID, ALARM_MESSAGE, CLEARED_ALARM_MESSAGE } = process.env;
const browser = await launch();

async function signIn(page, user) {
  await page.goto(BASE_URL);
  await page.fill('#f-username', user);
  await page.fill('#f-password', PASSWORD);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#calls tbody tr');
}

try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const violations = [];
  page.on('response', (r) => { if (r.url().includes('/api/')) console.log(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`); });
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });

  // The page comes with a strict policy and no inline code.
  const resp = await page.goto(BASE_URL);
  const csp = resp.headers()['content-security-policy'];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  step('the page is served with a strict Content-Security-Policy');
  // No single sign-on configured: local sign-in only, no provider button.
  await page.waitForSelector('#login #f-username');
  assert.equal(await page.locator('#sso').count(), 0);
  step('without single sign-on the sign-in page has no provider button');

  // Wrong password: a clear error, still on the sign-in form.
  await page.fill('#f-username', 'supervisor');
  await page.fill('#f-password', 'not the password at all');
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /wrong username or password/);
  step('a wrong password is refused with a message');
  await shot(page, '01-sign-in-refused');

  await signIn(page, 'supervisor');
  assert.equal(await page.locator('#calls tbody tr').count(), 4);
  assert.match(await page.textContent(`#calls tr[data-id="${SUPERVISOR_LIVE_ID}"]`), /recording/);
  step('sign in shows the two recorded calls and the two being recorded');

  // Filter by calling party: only the matching call remains.
  await page.fill('#f-calling', '1001');
  await page.click('#search');
  await until(page, () => document.querySelectorAll('#calls tbody tr').length === 1);
  assert.match(await page.textContent('#calls tbody'), /1001/);
  assert.doesNotMatch(await page.textContent('#calls tbody'), /3003/);
  assert.match(await page.textContent('#summary'), /^1 call$/);
  step('the calling-party filter leaves only the matching call');
  await shot(page, '02-interactions-filtered');

  // Nothing secret in web storage.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
  assert.doesNotMatch(stored, /csrf|session|token|password/i);

  // Open the call.
  await page.click(`#calls tr[data-id="${CALL_ID}"]`);
  await page.waitForSelector('#details');
  assert.match(await page.textContent('#participants'), /1001/);
  assert.match(await page.textContent('#participants'), /2002/);
  // Each party once, although the metadata's participants repeat the calling and called party.
  assert.equal(await page.locator('#participants li').count(), 2);
  assert.equal(await page.locator('.lane').count(), 2);
  step('the call opens with its participants and a lane per channel');

  // Play: the audio element's position moves and the playhead follows.
  await page.click('#play');
  await until(page, () => document.getElementById('audio').currentTime > 0.5, null, 20000);
  await until(page, () => Number(document.getElementById('playhead').dataset.fraction) > 0);
  step('play: currentTime moves and the timeline shows it');
  await shot(page, '03-call-playing');

  // Seek by clicking three quarters into the timeline.
  const box = await page.locator('#timeline').boundingBox();
  await page.mouse.click(box.x + box.width * 0.75, box.y + box.height / 2);
  await until(page, () => {
    const a = document.getElementById('audio');
    return a.currentTime >= a.duration * 0.7;
  });
  // The playhead follows once the element reports the seek.
  await until(page, () => Number(document.getElementById('playhead').dataset.fraction) >= 0.7);
  const fraction = Number(await page.getAttribute('#playhead', 'data-fraction'));
  step(`seek: a click at 75% of the timeline moves playback there (playhead ${fraction})`);

  // Speed.
  await page.selectOption('#speed', '1.5');
  assert.equal(await page.evaluate(() => document.getElementById('audio').playbackRate), 1.5);
  await page.click('#play');
  step('speed changes the playback rate');

  // Download: the browser saves the decrypted Ogg/Opus, byte for byte what was recorded.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  assert.match(download.suggestedFilename(), /_1001_2002_.*\.ogg$/);
  const saved = await readFile(await download.path());
  assert.equal(saved.subarray(0, 4).toString('latin1'), 'OggS');
  assert.equal(createHash('sha256').update(saved).digest('hex'), MEDIA_SHA256);
  step(`download saves ${download.suggestedFilename()}, identical to the recorded audio`);

  // Tag and note, then reload: both are still there.
  await page.selectOption('#tag-choice', { label: 'Escalated' });
  await page.click('#save-tags');
  await until(page, () => document.getElementById('tags')?.textContent.includes('Escalated'));
  await page.fill('#note-text', 'Customer asked for a callback');
  await page.click('#add-note');
  await until(page, () => document.getElementById('notes')?.textContent.includes('Customer asked for a callback'));
  await page.reload();
  await page.waitForSelector('#details');
  assert.match(await page.textContent('#tags'), /Escalated/);
  assert.match(await page.textContent('#notes'), /Customer asked for a callback/);
  step('a tag and a note are shown after reload');
  await shot(page, '04-call-tag-and-note');

  // Integrity.
  await page.click('#check-integrity');
  await until(page, () => document.getElementById('integrity-result').textContent.trim() !== '');
  assert.match(await page.textContent('#integrity-result'), /^\s*authenticated/);
  assert.equal(await page.getAttribute('#integrity-result', 'class'), 'ok');
  step('the integrity check says authenticated');

  // The audit trail shows what the supervisor did.
  await page.click('a[href="#/admin/audit"]');
  await page.waitForSelector('#audit tbody tr');
  await page.fill('#f-actor', 'supervisor');
  await page.click('#audit-filters button[type=submit]');
  await until(page, () => document.querySelector('#audit tbody')?.textContent.includes('note.add'));
  const audit = await page.textContent('#audit tbody');
  for (const a of ['login', 'view', 'play', 'download', 'tag.set', 'note.add']) assert.ok(audit.includes(a), `audit lacks ${a}`);
  await shot(page, '05-audit-trail');
  const csv = await page.evaluate(async () => {
    const r = await fetch(document.getElementById('audit-csv').href);
    return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
  });
  assert.equal(csv.status, 200);
  assert.match(csv.body, /note\.add/);
  step('the audit trail lists login, view, play, download, tag.set and note.add and exports them as CSV');

  // Active calls: both live calls with their users; the duration counts up while one watches.
  const text = (sel) => page.textContent(sel);
  await page.click('a[href="#/active"]');
  await page.waitForSelector('#active-calls tbody tr');
  assert.equal(await page.locator('#active-calls tbody tr').count(), 2);
  assert.equal((await text('#active-summary')).trim(), 'Total calls: 2');
  const mineRow = `#active-calls tr[data-id="${SUPERVISOR_LIVE_ID}"]`;
  assert.match(await text(mineRow), new RegExp(`supervisor display.*${SUPERVISOR_LIVE}`));
  assert.match(await text(`#active-calls tr[data-id="${REVIEWER_LIVE_ID}"]`), new RegExp(`reviewer display.*${REVIEWER_LIVE}`));
  const first = await text(`${mineRow} .duration`);
  await until(page, ([sel, was]) => document.querySelector(sel)?.textContent !== was, [`${mineRow} .duration`, first], 5000);
  step(`active calls lists both live calls with their users; the duration moves on from ${first}`);

  // Straight from the list: set tags and add a note on a live call, then export the list.
  await page.click(`${mineRow} .live-tag`);
  await page.waitForSelector('#live-editor:not([hidden]) #live-tags');
  assert.equal(new URL(page.url()).hash, '#/active', 'the row\'s buttons do not open the call');
  await page.selectOption('#live-tags', { label: 'Escalated' });
  await page.click('#live-save');
  await until(page, (sel) => document.querySelector(sel)?.textContent.includes('Escalated'), `${mineRow} .live-tags`);
  await page.click(`${mineRow} .live-note`);
  await page.fill('#live-note', 'Customer asked for a callback');
  await page.click('#live-save');
  await until(page, (sel) => document.querySelector(sel)?.textContent.includes('Customer asked for a callback'), `${mineRow} .live-notes`);
  assert.doesNotMatch(await text(`#active-calls tr[data-id="${REVIEWER_LIVE_ID}"]`), /Escalated|callback/);
  step('a live call is tagged and annotated from the active-calls list');
  await shot(page, '07-active-calls');
  const [exported] = await Promise.all([page.waitForEvent('download'), page.click('#export-active')]);
  assert.equal(exported.suggestedFilename(), 'active-calls.csv');
  const report = await readFile(await exported.path(), 'utf8');
  assert.match(report, /Search Criteria/);
  assert.ok(report.includes(SUPERVISOR_LIVE_ID) && report.includes(REVIEWER_LIVE_ID), report);
  assert.ok(!report.includes(CALL_ID), 'a recorded call is not an active one');
  assert.match(report, /Escalated/);
  step('export of the active-calls list has an entry for each live call and none for recorded ones');
  await page.click(mineRow);
  await page.waitForSelector('#live');
  assert.equal(await page.locator('#play').count(), 0);
  step('a live call opens without a player: it is being recorded');

  // My active call: only the supervisor's own.
  await page.click('a[href="#/my-active"]');
  await page.waitForSelector('#my-active .my-call');
  assert.equal(await page.locator('#my-active .my-call').count(), 1);
  assert.match(await text('#my-active'), new RegExp(SUPERVISOR_LIVE));
  assert.doesNotMatch(await text('#my-active'), new RegExp(REVIEWER_LIVE));
  step('my active call shows the supervisor\'s own live call and not the reviewer\'s');
  // Its card carries the call's tags and notes, and a note is added from it.
  const myCall = `#my-active .my-call[data-id="${SUPERVISOR_LIVE_ID}"]`;
  assert.match(await text(`${myCall} .live-tags`), /Escalated/);
  await page.click(`${myCall} .live-note`);
  await page.fill('#live-note', 'Promised a written answer');
  await page.click('#live-save');
  await until(page, (sel) => document.querySelector(sel)?.textContent.includes('Promised a written answer'), `${myCall} .live-notes`);
  assert.match(await text(`${myCall} .live-notes`), /Customer asked for a callback/);
  step('my active call shows the call\'s tags and notes and adds a note from its card');
  await shot(page, '08-my-active-call');

  // The declared resources, each with its state as reported.
  async function resources(link, name) {
    await page.click(`a[href="#/admin/${link}"]`);
    const row = `#resources tr[data-name="${name}"]`;
    await page.waitForSelector(row);
    return text(row);
  }
  const rp = await resources('recording-profiles', 'retail-banking-agents');
  assert.match(rp, /Ready: True/);
  assert.match(rp, /primary-s3/);
  assert.match(rp, /2 of 2/);
  await shot(page, '09-recording-profiles');
  const stg = await resources('storage-targets', 'primary-s3');
  assert.match(stg, /Reachable: True/);
  assert.match(stg, /120\.6 KiB/);
  assert.match(await resources('connectors', 'offsite-archive'), /no status reported/);
  assert.match(await resources('speech-jobs', 'complaints-transcription'), /whisper base\.en/);
  assert.match(await resources('access-profiles', 'reviewers'), /group reviewers.*All/);
  step('recording profiles (Ready: True), storage, connectors, speech jobs and access profiles are listed');

  await page.click('a[href="#/admin/groups"]');
  await page.waitForSelector('#groups tbody tr');
  assert.match(await text('#groups tbody'), /supervisors.*supervisor/);
  step('groups are listed with their members');

  // Alarms: the active one; the cleared one only in the history; the activity log.
  await page.click('a[href="#/admin/alarms"]');
  await page.waitForSelector('#alarms tbody tr');
  assert.match(await text('#alarms'), new RegExp(ALARM_MESSAGE));
  assert.match(await text('#alarms'), /critical/);
  assert.doesNotMatch(await text('#alarms'), new RegExp(CLEARED_ALARM_MESSAGE));
  assert.match(await text('#activity'), new RegExp(ALARM_MESSAGE));
  await shot(page, '10-alarms');
  await page.check('#alarm-history');
  await until(page, (m) => document.getElementById('alarms').textContent.includes(m), CLEARED_ALARM_MESSAGE);
  step('alarms show the active alarm, the cleared one in the history, and the activity log');

  // Sign out; a reviewer may see the call but not play it.
  await page.click('#logout');
  await page.waitForSelector('#login');
  await signIn(page, 'reviewer');
  await page.click(`#calls tr[data-id="${CALL_ID}"]`);
  await page.waitForSelector('#details');
  assert.equal(await page.locator('#play').count(), 0);
  await page.waitForSelector('#no-play');
  const status = await page.evaluate((id) => fetch(`/api/v1/recordings/${id}/media`).then((r) => r.status), CALL_ID);
  assert.equal(status, 403);
  assert.equal(await page.locator('a[href="#/admin/audit"]:visible').count(), 0);
  step('a reviewer without play permission sees no play button and the API answers 403');
  await shot(page, '06-reviewer-no-play');

  // No admin screen for the reviewer; their own live call, never the supervisor's.
  for (const link of ['groups', 'recording-profiles', 'storage-targets', 'alarms']) {
    assert.equal(await page.locator(`a[href="#/admin/${link}"]:visible`).count(), 0, link);
  }
  await page.click('a[href="#/my-active"]');
  await page.waitForSelector('#my-active .my-call');
  assert.match(await page.textContent('#my-active'), new RegExp(REVIEWER_LIVE));
  assert.doesNotMatch(await page.textContent('#my-active'), new RegExp(SUPERVISOR_LIVE));
  assert.equal(await page.locator('#my-active .live-tag, #my-active .live-note').count(), 0);
  // Active calls in scope, but none of tag, note or export is theirs: no buttons for them.
  await page.click('a[href="#/active"]');
  await page.waitForSelector(`#active-calls tr[data-id="${SUPERVISOR_LIVE_ID}"]`);
  assert.match(await page.textContent(`#active-calls tr[data-id="${SUPERVISOR_LIVE_ID}"]`), /Escalated/);
  assert.equal(await page.locator('#active-calls .live-tag, #active-calls .live-note').count(), 0);
  assert.equal(await page.locator('#export-active').isVisible(), false);
  step('a reviewer sees live calls\' tags but gets no tag, note or export button');
  await page.goto(`${BASE_URL}/#/admin/alarms`);
  await page.waitForSelector('#error:not([hidden])');
  assert.match(await page.textContent('#error'), /forbidden/);
  assert.doesNotMatch(await page.textContent('main'), new RegExp(ALARM_MESSAGE));
  step('a reviewer sees no admin links, only their own active call, and alarms are refused');

  assert.deepEqual(violations, []);
  await context.close();
} catch (e) {
  // What the browser showed when it failed, beside the other screenshots.
  for (const ctx of browser.contexts()) for (const p of ctx.pages()) await shot(p, 'failure').catch(() => {});
  throw e;
} finally {
  await browser.close();
}
