// chat-two.mjs BASE EVENT COOKIE_A COOKIE_B ORGANISER_COOKIE [NGINX_MASTER_PID]: two people
// (two browser contexts, each with a signed-in session cookie of a ticket
// holder of EVENT) chat in room.html; t/57-browser-chat.t judges the JSON
// line printed.
//
//   1. A and B open room.html?event=EVENT; both connect; the count shows 2.
//   2. A writes, B sees it; B writes, A sees it; markup is shown as text.
//   3. B reloads: the history has both messages.
//   4. With a master pid: nginx reloads (SIGHUP), the old workers close
//      with 1001, both pages reconnect by themselves and chat again.
//   5. A sends faster than the rate limit: the error frame is shown.
//   6. The organiser opens organiser/room.html: the rooms with their live
//      counts (main: 2), the admin room's chat, the help requests' place.
//
// Records script errors and failed loads (result.errors).  Bounded by a
// watchdog (CHAT_TIMEOUT ms, default 90 s).

import { launchBrowser } from './chromium.mjs';

const [base, eventId, cookieA, cookieB, cookieO, master] = process.argv.slice(2);
const result = { errors: [], steps: [] };
const timeout = Number(process.env.CHAT_TIMEOUT) || 90000;

function print() {
  console.log(JSON.stringify(result));
}

const watchdog = setTimeout(() => {
  result.errors.push(`timed out after ${timeout / 1000} s`);
  print();
  process.exit(1);
}, timeout);

async function person(browser, label, cookie) {
  const context = await browser.newContext();
  await context.addCookies([{ name: 'platform_session', value: cookie, url: base }]);
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (err) => result.errors.push(`${label}: pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error'
        && !/^Failed to load resource: the server responded with a status of/.test(msg.text())
        && !/WebSocket connection to .* failed/.test(msg.text())) {
      result.errors.push(`${label}: console: ${msg.text()}`);
    }
  });
  page.on('response', (res) => {
    if (res.status() >= 400 && !new URL(res.url()).pathname.startsWith('/api/events/')) {
      result.errors.push(`${label}: ${res.url()} ${res.status()}`);
    }
  });
  return {
    page,
    async open() {
      await page.goto(`${base}/room.html?event=${eventId}`);
      await this.connected();
    },
    async connected() {
      await page.locator('#conn-status').filter({ hasText: /^Connected\.$/ }).waitFor();
    },
    async say(text) {
      await page.locator('#text').fill(text);
      await page.locator('#text').press('Enter');
    },
    async sees(text) {
      const l = page.locator('#messages li.msg .text').filter({ hasText: text }).first();
      await l.waitFor();
      return l.textContent();
    },
    async count(n) {
      await page.locator(`#count[data-count="${n}"]`).waitFor();
      return (await page.locator('#count').textContent()).trim();
    },
    texts() {
      return page.locator('#messages li.msg .text').allTextContents();
    },
  };
}

async function run() {
  const browser = await launchBrowser();
  try {
    const a = await person(browser, 'A', cookieA);
    const b = await person(browser, 'B', cookieB);

    await a.open();
    result.video = await a.page.locator('section#video h2').textContent();
    result.tabs = await a.page.locator('[role="tab"]:visible').allTextContents();
    await b.open();
    result.count_a = await a.count(2);
    result.count_b = await b.count(2);
    result.steps.push('both in');

    await a.say('Hello from A');
    result.b_saw = await b.sees('Hello from A');
    result.b_sender = (await b.page.locator('#messages li.msg', { hasText: 'Hello from A' })
      .locator('.who').textContent()).trim();
    await b.say('Hi A, B here');
    result.a_saw = await a.sees('Hi A, B here');
    await a.say('<img src=x onerror="window.__xss=1"> & <b>bold</b>');
    result.markup = await b.sees('onerror');
    result.markup_elements = await b.page.locator('#messages img, #messages b').count();
    result.xss = await b.page.evaluate(() => window.__xss ?? null);
    result.steps.push('chatted');

    await b.page.reload();
    await b.connected();
    await b.sees('Hi A, B here');
    result.history = (await b.texts()).slice(-3);
    result.count_after_reload = await a.count(2);
    result.steps.push('history');

    if (master) {
      process.kill(Number(master), 'SIGHUP');
      await a.page.locator('#conn-status').filter({ hasText: /Reconnecting|restarted|lost/ })
        .waitFor({ timeout: 30000 });
      result.reconnect_status = (await a.page.locator('#conn-status').textContent()).trim();
      await a.page.locator('#conn-status').filter({ hasText: /^Connected\.$/ })
        .waitFor({ timeout: 60000 });
      await b.page.locator('#conn-status').filter({ hasText: /^Connected\.$/ })
        .waitFor({ timeout: 60000 });
      await a.count(2);
      await a.say('After the reload');
      result.after_reload = await b.sees('After the reload');
      result.duplicates = (await b.texts()).length - new Set(await b.texts()).size;
      result.steps.push('reconnected');
    }

    await a.page.evaluate(() => {
      const input = document.getElementById('text');
      const form = document.getElementById('send');
      for (let i = 0; i < 30; i++) {
        input.value = `flood ${i}`;
        form.requestSubmit();
      }
    });
    result.rate_error = (await a.page.locator('#chat-error').filter({ hasText: /\S/ })
      .textContent()).trim();
    result.steps.push('error frame');

    const o = await person(browser, 'O', cookieO);
    await o.page.goto(`${base}/organiser/room.html?event=${eventId}`);
    await o.connected();
    await o.page.locator('#room-rows tr[data-room="main"]').waitFor();
    result.org_rooms = await o.page.locator('#room-rows tr').evaluateAll((rows) =>
      rows.map((r) => [...r.cells].slice(0, 2).map((c) => c.textContent.trim()).join(' | ')));
    result.org_join = await o.page.locator('#room-rows tr[data-room="main"] a')
      .getAttribute('href');
    result.org_help = (await o.page.locator('#help-empty').textContent()).trim();
    await o.say('Organisers only');
    result.org_saw = await o.sees('Organisers only');
    result.org_count = await o.count(1);
    result.steps.push('organiser');
  } finally {
    await browser.close();
  }
}

run().then(() => {
  clearTimeout(watchdog);
  print();
  process.exit(0);
}, (err) => {
  clearTimeout(watchdog);
  result.errors.push(String(err && err.stack || err));
  print();
  process.exit(1);
});
