// privacy.mjs BASE EMAIL: the privacy page in headless Chromium, as a
// person uses it, printing one JSON line with what was seen.
//
//   1. privacy.html: an empty form is refused with a sentence; the email
//      is typed, "a copy" chosen, the form sent: "Check your mail".
//   2. The confirmation link is read from BASE/test/last-link?email= (a
//      test-only location of t/132-privacy-browser.t reading the mail
//      job); confirm.html, the button: back on privacy.html, "confirmed".
//   3. The export link (mailed once the jobs runner built the file) opens
//      privacy.html#export=...; "Download my data" saves my-data.json,
//      whose content is returned.
//
// Exit status 0 when every step ran; the .t judges the content.  Killed
// after 90 s.

import { launch } from './chromium.mjs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, email] = process.argv.slice(2);
if (!base || !email) {
  console.error('usage: node privacy.mjs BASE EMAIL');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'platform-chromium-'));

const watchdog = setTimeout(() => {
  console.error('privacy.mjs: timed out after 90 s');
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, 90000);

const result = { steps: [], errors: [] };
let context;
let ok = false;

async function text(page, selector) {
  return ((await page.locator(selector).textContent()) || '').trim();
}

async function lastLink(page, pattern) {
  for (let i = 0; i < 100; i++) {
    const res = await page.request.get(`${base}/test/last-link?email=${email}`);
    const link = (await res.json()).link || '';
    if (pattern.test(link)) return link;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no link matching ${pattern}`);
}

try {
  context = await launch(userDataDir);
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (err) => result.errors.push(`pageerror: ${err.message}`));

  // 1. The request.
  await page.goto(`${base}/privacy.html`, { waitUntil: 'load' });
  result.title = await page.title();
  await page.locator('#submit').click();
  await page.locator('#message').filter({ hasText: /\S/ }).waitFor();
  result.empty_message = await text(page, '#message');

  await page.locator('#email').fill(email);
  await page.locator('input[name=kind][value=export]').check();
  await page.locator('#submit').click();
  await page.locator('#message').filter({ hasText: 'Check your mail' }).waitFor();
  result.sent_message = await text(page, '#message');
  result.steps.push('requested');

  // 2. The confirmation.
  const link = await lastLink(page, /\/confirm\.html#token=/);
  await page.goto(link, { waitUntil: 'load' });
  await page.locator('#confirm').click();
  await page.waitForURL(/\/privacy\.html\?confirmed=export/);
  await page.locator('#message').filter({ hasText: 'confirmed' }).waitFor();
  result.confirmed_message = await text(page, '#message');
  result.steps.push('confirmed');

  // 3. The download.
  const exportLink = await lastLink(page, /\/privacy\.html#export=/);
  await page.goto(exportLink, { waitUntil: 'load' });
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#fetch').click(),
  ]);
  result.filename = download.suggestedFilename();
  const path = await download.path();
  result.file = JSON.parse(readFileSync(path, 'utf8'));
  await page.locator('#message').filter({ hasText: 'downloaded' }).waitFor();
  result.downloaded_message = await text(page, '#message');
  result.steps.push('downloaded');

  ok = true;
} catch (err) {
  result.errors.push(`privacy: ${err.message.split('\n')[0]}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}

console.log(JSON.stringify(result));
process.exit(ok ? 0 : 1);
