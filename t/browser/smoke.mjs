// smoke.mjs URL: opens the landing page in headless Chromium the way a
// person would and prints one JSON line describing what was seen:
//
//   {"title": ..., "health": ..., "sections": [...], "errors": [...],
//    "failed": [...]}
//
// Exit status 0 when the page loaded and the health line reached its final
// state ("Database: ..." other than "checking"), 1 otherwise.  t/40-browser.t
// judges the content.  Bounded: the whole run is killed after 60 s.

import { launch } from './chromium.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const url = process.argv[2];
if (!url) {
  console.error('usage: node smoke.mjs URL');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'platform-chromium-'));

const watchdog = setTimeout(() => {
  console.error('smoke.mjs: timed out after 60 s');
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, 60000);

const result = { title: null, health: null, sections: [], errors: [], failed: [] };
let context;
let ok = false;

try {
  context = await launch(userDataDir);

  const page = context.pages()[0] || await context.newPage();

  page.on('pageerror', (err) => result.errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') result.errors.push(`console: ${msg.text()}`);
  });
  page.on('requestfailed', (req) =>
    result.failed.push(`${req.url()} ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    if (res.status() >= 400) result.failed.push(`${res.url()} ${res.status()}`);
  });

  const res = await page.goto(url, { waitUntil: 'load', timeout: 20000 });
  result.status = res ? res.status() : null;
  result.title = await page.title();
  result.sections = await page.locator('main section h2').allTextContents();

  const health = page.locator('#health');
  await health.filter({ hasNotText: 'checking' }).waitFor({ timeout: 15000 });
  result.health = (await health.textContent()).trim();
  result.stylesheet = await page.evaluate(
    () => getComputedStyle(document.querySelector('header.site h1')).color);

  ok = true;
} catch (err) {
  result.errors.push(`smoke: ${err.message.split('\n')[0]}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}

console.log(JSON.stringify(result));
process.exit(ok ? 0 : 1);
