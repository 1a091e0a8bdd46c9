// chat-help.mjs BASE EVENT COOKIE_A COOKIE_B ORGANISER_COOKIE: presence
// list and help requests between the participant's room.html and the
// organisers' organiser/room.html (three browser contexts, signed-in
// session cookies); t/59-browser-chat-help.t judges the JSON line printed.
//
//   1. A and B open room.html?event=EVENT: the presence list names both.
//   2. The organiser opens organiser/room.html: nobody is asking for help.
//   3. A goes to the team tab and asks for help with a note: the page says
//      an organiser was told.
//   4. The organiser's page (not reloaded) shows the flag: A's name, the
//      note (as text), a "Join the team room" link.
//   5. The organiser follows the link: a new tab in A's team room, A is in
//      its presence list; the organiser writes there, A sees it.
//   6. The organiser clears the flag: it disappears from the organiser's
//      page, and A's page says the request was handled.
//
// Records script errors and failed loads (result.errors).  Bounded by a
// watchdog (CHAT_TIMEOUT ms, default 90 s).

import { launchBrowser } from './chromium.mjs';

const [base, eventId, cookieA, cookieB, cookieO] = process.argv.slice(2);
const result = { errors: [], steps: [] };
const timeout = Number(process.env.CHAT_TIMEOUT) || 90000;
const NOTE = 'Our build is <b>broken</b> & stuck';

function print() {
  console.log(JSON.stringify(result));
}

const watchdog = setTimeout(() => {
  result.errors.push(`timed out after ${timeout / 1000} s`);
  print();
  process.exit(1);
}, timeout);

function watch(page, label) {
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
}

async function person(browser, label, cookie) {
  const context = await browser.newContext();
  await context.addCookies([{ name: 'platform_session', value: cookie, url: base }]);
  const page = await context.newPage();
  watch(page, label);
  context.on('page', (p) => { if (p !== page) watch(p, `${label} (tab)`); });
  return { context, page };
}

const connected = (page) =>
  page.locator('#conn-status').filter({ hasText: /^Connected\.$/ }).waitFor();

async function presentList(page, n) {
  await page.locator('#present:visible li').nth(n - 1).waitFor();
  await page.waitForFunction((k) =>
    document.querySelectorAll('#present li').length === k, n);
  return page.locator('#present li').allTextContents().then((l) => l.map((s) => s.trim()));
}

async function run() {
  const browser = await launchBrowser();
  try {
    const a = await person(browser, 'A', cookieA);
    const b = await person(browser, 'B', cookieB);
    const o = await person(browser, 'O', cookieO);

    await a.page.goto(`${base}/room.html?event=${eventId}`);
    await connected(a.page);
    await b.page.goto(`${base}/room.html?event=${eventId}`);
    await connected(b.page);
    result.present_a = await presentList(a.page, 2);
    result.present_b = await presentList(b.page, 2);
    result.steps.push('presence list');

    await o.page.goto(`${base}/organiser/room.html?event=${eventId}`);
    await connected(o.page);
    result.help_empty = (await o.page.locator('#help-empty:visible').textContent()).trim();
    await o.page.evaluate(() => { window.__notReloaded = true; });
    result.steps.push('organiser in');

    // A's team tab: shown once GET /api/events/{id}/team names the team
    await a.page.locator('#tab-team:visible').click();
    await a.page.locator('#tab-team[aria-selected="true"]').waitFor();
    await connected(a.page);
    result.team_tab = (await a.page.locator('#tab-team').textContent()).trim();
    await a.page.locator('#help-text').fill(NOTE);
    await a.page.locator('#help-button').click();
    await a.page.locator('#help-message').filter({ hasText: /organiser has been told/ })
      .waitFor();
    result.help_ack = (await a.page.locator('#help-message').textContent()).trim();
    result.steps.push('asked');

    const flag = o.page.locator('#help-list li.help-request');
    await flag.first().waitFor();
    result.flags = await flag.count();
    result.flag_name = (await flag.locator('strong').textContent()).trim();
    result.flag_text = (await flag.locator('.text').textContent()).trim();
    result.flag_elements = await o.page.locator('#help-list b').count();
    result.help_empty_hidden = await o.page.locator('#help-empty').isHidden();
    result.not_reloaded = await o.page.evaluate(() => window.__notReloaded === true);
    const join = flag.getByRole('link', { name: 'Join the team room' });
    result.join_href = await join.getAttribute('href');
    result.steps.push('flag shown');

    const [tab] = await Promise.all([o.context.waitForEvent('page'), join.click()]);
    await tab.waitForLoadState();
    await connected(tab);
    result.tab_url = new URL(tab.url()).search;
    result.tab_selected = await tab.locator('#tab-team').getAttribute('aria-selected');
    result.tab_present = await presentList(tab, 2);
    await tab.locator('#text').fill('An organiser is here');
    await tab.locator('#text').press('Enter');
    await a.page.locator('#messages li.msg .text').filter({ hasText: 'An organiser is here' })
      .waitFor();
    result.a_saw = 'An organiser is here';
    await tab.close();
    result.steps.push('joined the team room');

    await flag.locator('button[data-clear]').click();
    await o.page.locator('#help-list li.help-request').first().waitFor({ state: 'detached' });
    await o.page.locator('#help-empty:visible').waitFor();
    result.flags_after = await o.page.locator('#help-list li').count();
    result.cleared_message = (await o.page.locator('#help-message').filter({ hasText: /\S/ })
      .textContent()).trim();
    await a.page.locator('#help-message').filter({ hasText: /handled/ }).waitFor();
    result.a_handled = (await a.page.locator('#help-message').textContent()).trim();
    result.steps.push('cleared');

    // a reload of the organiser's page: still nothing open
    await o.page.reload();
    await connected(o.page);
    result.help_empty_after_reload = (await o.page.locator('#help-empty:visible')
      .textContent()).trim();
    result.steps.push('reloaded');
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
