// signin.mjs BASE EMAIL: signs in through the pages in headless Chromium
// the way a person would, and prints one JSON line with what was seen.
//
//   1. signin.html: an empty form is refused with a sentence; then the
//      email is typed, the consent box ticked, the form sent: "Check your
//      mail".
//   2. The link is read from BASE/test/last-link?email= (a test-only
//      location of t/55-browser-signin.t that reads the mail job).
//   3. The link opens confirm.html: nothing is sent on load (mail scanners
//      open links); "Sign in" is clicked; the browser lands on
//      account.html, which shows the email.
//   4. Staff accounts: TOTP is set up on the account page (the code is
//      computed here from the secret shown) and the session is verified.
//   5. The spent link again: the page says it is no longer valid.
//   6. "Sign out everywhere": the account page then offers to sign in.
//   7. signin.html again until the rate limit: its sentence is shown.
//
// Exit status 0 when every step ran, 1 otherwise; the .t judges the
// content.  Bounded: the whole run is killed after 90 s.  With
// PLATFORM_SCREENSHOTS=DIR each step leaves a PNG there.

import { launch } from './chromium.mjs';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, email] = process.argv.slice(2);
if (!base || !email) {
  console.error('usage: node signin.mjs BASE EMAIL');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'platform-chromium-'));

const watchdog = setTimeout(() => {
  console.error('signin.mjs: timed out after 90 s');
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, 90000);

const result = { steps: [], errors: [], responses: [] };
let context;
let ok = false;

function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of s.toUpperCase().replace(/[^A-Z2-7]/g, '')) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) {
    bytes.push(parseInt(bits.slice(i, i + 8), 2));
  }
  return Buffer.from(bytes);
}

function totp(key, step) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', key).update(msg).digest();
  const o = h[19] & 15;
  const bin = h.readUInt32BE(o) & 0x7fffffff;
  return String(bin % 1000000).padStart(6, '0');
}

const shots = process.env.PLATFORM_SCREENSHOTS;

async function shot(page, name) {
  if (shots) await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function text(page, selector) {
  return ((await page.locator(selector).textContent()) || '').trim();
}

try {
  context = await launch(userDataDir);

  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);

  page.on('pageerror', (err) => result.errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // Chromium reports every 4xx as a console error; those are judged
    // from `responses` instead.
    if (msg.type() === 'error'
        && !/^Failed to load resource: the server responded with a status of/
            .test(msg.text())) {
      result.errors.push(`console: ${msg.text()}`);
    }
  });
  page.on('requestfailed', (req) =>
    result.errors.push(`requestfailed: ${req.url()} ${req.failure()?.errorText}`));
  page.on('response', (res) => {
    const u = new URL(res.url());
    if (u.pathname.startsWith('/api/')) {
      result.responses.push(`${res.request().method()} ${u.pathname} ${res.status()}`);
    } else if (res.status() >= 400) {
      result.errors.push(`${res.url()} ${res.status()}`);
    }
  });

  // 1. The sign-in form.
  await page.goto(`${base}/signin.html`, { waitUntil: 'load' });
  result.title = await page.title();

  await page.locator('#submit').click();
  await page.locator('#message').filter({ hasText: /\S/ }).waitFor();
  result.empty_message = await text(page, '#message');

  await page.locator('#email').fill(email);
  await page.locator('#submit').click();
  await page.locator('#message').filter({ hasText: 'terms' }).waitFor();
  result.consent_message = await text(page, '#message');

  await page.locator('#consent').check();
  await page.locator('#submit').click();
  await page.locator('#message').filter({ hasText: 'Check your mail' }).waitFor();
  result.sent_message = await text(page, '#message');
  result.form_hidden = await page.locator('#signin').isHidden();
  await shot(page, '1-signin-sent');
  result.steps.push('requested');

  // 2. The mail.
  const res = await page.request.get(
    `${base}/test/last-link?email=${email}`);  // $arg_email is not decoded
  const link = (await res.json()).link;
  result.link = link;

  // 3. The link: nothing happens until "Sign in" is pressed.
  await page.goto(link, { waitUntil: 'load' });
  await page.waitForTimeout(500);
  result.confirm_before_click = result.responses
    .filter((r) => r.includes('/api/auth/confirm')).length;
  result.button = await text(page, '#confirm');
  await shot(page, '2-confirm');

  await Promise.all([
    page.waitForURL(/\/account\.html$/),
    page.locator('#confirm').click(),
  ]);
  result.landed = new URL(page.url()).pathname;
  await page.locator('#email').filter({ hasText: /\S/ }).waitFor();
  result.account_email = await text(page, '#email');
  result.sessions = await page.locator('#sessions tr').count();
  result.cookie = (await context.cookies())
    .filter((c) => c.name === 'platform_session')
    .map((c) => ({ httpOnly: c.httpOnly, sameSite: c.sameSite }))[0] || null;
  result.cookie_visible_to_script =
    await page.evaluate(() => document.cookie.includes('platform_session'));
  await shot(page, '3-account');
  result.steps.push('signed in');

  // 4. TOTP for staff.
  if (await page.locator('#totp-section').isVisible()) {
    await page.locator('#totp-start').click();
    await page.locator('#totp-secret').filter({ hasText: /\S/ }).waitFor();
    const secret = await text(page, '#totp-secret');
    result.totp_uri = await page.locator('#totp-uri').getAttribute('href');
    const key = base32Decode(secret);

    await page.locator('#totp-code').fill('000000' === totp(key, Math.floor(Date.now() / 30000))
                                          ? '111111' : '000000');
    await page.locator('#totp-verify button').click();
    await page.locator('#totp-message').filter({ hasText: /\S/ }).waitFor();
    result.totp_wrong = await text(page, '#totp-message');
    await shot(page, '4-totp-wrong');

    await page.locator('#totp-code').fill(totp(key, Math.floor(Date.now() / 30000)));
    await page.locator('#totp-verify button').click();
    await page.locator('#totp-state').filter({ hasText: 'this session is verified' })
      .waitFor();
    result.totp_state = await text(page, '#totp-state');
    await shot(page, '5-totp-verified');
    result.steps.push('totp');
  }

  // 5. The same link again.
  await page.goto(link, { waitUntil: 'load' });
  await page.locator('#confirm').click();
  await page.locator('#message').filter({ hasText: 'no longer valid' }).waitFor();
  result.reused_message = await text(page, '#message');
  result.reused_offers = await page.locator('#message a').getAttribute('href');
  await shot(page, '6-reused');
  result.steps.push('reuse refused');

  // 6. Sign out everywhere.
  await page.goto(`${base}/account.html`, { waitUntil: 'load' });
  await page.locator('#email').filter({ hasText: /\S/ }).waitFor();
  await page.locator('#logout').click();
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  result.logout_text = await text(page, '#signed-out-text');
  await page.reload({ waitUntil: 'load' });
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  result.after_reload = await text(page, '#signed-out-text');
  await shot(page, '7-signed-out');
  result.steps.push('signed out');

  // 7. The rate limit, as a sentence.
  for (let i = 0; i < 6; i++) {
    await page.goto(`${base}/signin.html`, { waitUntil: 'load' });
    await page.locator('#email').fill(email);
    await page.locator('#consent').check();
    await page.locator('#submit').click();
    await page.locator('#message')
      .filter({ hasText: /Check your mail|Too many/ }).waitFor();
    result.limit_message = await text(page, '#message');
    if (result.limit_message.startsWith('Too many')) break;
  }
  await shot(page, '8-rate-limit');
  result.steps.push('rate limit');

  ok = true;
} catch (err) {
  result.errors.push(`signin: ${err.message.split('\n')[0]}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}

console.log(JSON.stringify(result));
process.exit(ok ? 0 : 1);
