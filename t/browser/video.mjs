// video.mjs URL COOKIE: opens the event page (event.html?id=N) signed in
// with the platform_session COOKIE, waits for the live video section to
// play, and prints one JSON line:
//
//   {"live": "true"|..., "status": "...", "start": s, "later": s,
//    "h264": "...", "errors": [...]}
//
// "start" and "later" are the video's currentTime when it first moved and
// two seconds of page time afterwards.  Exit status 0 when currentTime
// advanced.  t/58-browser-video.t judges.  Bounded: 90 s.

import { launchBrowser } from './chromium.mjs';

const [url, cookie] = process.argv.slice(2);
if (!url || !cookie) {
  console.error('usage: node video.mjs URL COOKIE');
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error('video.mjs: timed out after 90 s');
  process.exit(1);
}, 90000);

const result = { errors: [] };
let browser;
let ok = false;

try {
  browser = await launchBrowser();
  const context = await browser.newContext();
  const u = new URL(url);
  await context.addCookies([{ name: 'platform_session', value: cookie,
                              domain: u.hostname, path: '/' }]);
  const page = await context.newPage();
  page.on('pageerror', (err) => result.errors.push(`pageerror: ${err.message}`));

  await page.goto(url, { waitUntil: 'load', timeout: 20000 });

  result.h264 = await page.evaluate(() =>
    window.MediaSource
      ? String(MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E,mp4a.40.2"'))
      : 'no MediaSource');

  await page.waitForFunction(() => {
    const v = document.querySelector('#video video');
    return v && v.currentTime > 0.5;
  }, null, { timeout: 60000 });

  result.start = await page.evaluate(() => document.querySelector('#video video').currentTime);
  await page.waitForTimeout(2000);
  result.later = await page.evaluate(() => document.querySelector('#video video').currentTime);
  result.live = await page.evaluate(() => document.getElementById('video').dataset.live);
  result.status = await page.evaluate(() => document.querySelector('#video [role=status]').textContent);
  ok = result.later > result.start;
} catch (err) {
  result.errors.push(String(err.message || err));
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
  console.log(JSON.stringify(result));
  process.exit(ok ? 0 : 1);
}
