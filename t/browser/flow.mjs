// flow.mjs: runs the page flows of the event pages (t/browser/events-*.mjs)
// in one headless Chromium, the way several people would use the site at
// once; t/56-browser-events.t starts it through events.mjs and judges
// what it prints.
//
//   export default async function ({ base, state, result, person, step }) {
//     const o = await person('organiser');   // that person's browser tab
//     await o.page.goto(`${base}/organiser/`);
//     result.seen = await o.text('#status');
//     step('published');
//   }
//
// person(LABEL) is one person with a browser context of their own
// (cookies kept for the whole run: the organiser signed in by one flow is
// still signed in in the next).  Every tab records what a test judges:
// script errors, failed loads (result.errors), and every /api/ answer as
// "METHOD /path STATUS" (result.api[LABEL]).  `state` carries what one
// flow leaves to the next (the organisation, the event).
//
// runFlows(FLOWS) runs the flows named on the command line (BASE NAME...)
// in order and prints one JSON line {"<name>": result, ...}; a flow that
// fails ends the run (the later ones depend on it).  Exit status 0 when
// every flow ran every step.  Bounded by a watchdog (FLOW_TIMEOUT ms,
// default 150 s).  With PLATFORM_SCREENSHOTS=DIR, shot(NAME) leaves
// DIR/<flow>-<n>-<name>.png (and <flow>-failed-<person>.png on failure).

import { launchBrowser } from './chromium.mjs';
import { join } from 'node:path';

export async function runFlows(flows) {
  const [base, ...names] = process.argv.slice(2);
  const unknown = names.filter((n) => !flows[n]);
  if (!base || !names.length || unknown.length) {
    console.error(`usage: node events.mjs BASE FLOW... (${Object.keys(flows).join(' ')})`);
    process.exit(2);
  }

  const timeout = Number(process.env.FLOW_TIMEOUT) || 150000;
  const dir = process.env.PLATFORM_SCREENSHOTS;
  const out = {};
  const people = new Map();
  const state = {};
  let current = null;   // the result of the flow running
  let browser = null;

  function print() {
    console.log(JSON.stringify(out));
  }

  const watchdog = setTimeout(() => {
    if (current) current.errors.push(`timed out after ${timeout / 1000} s`);
    print();
    process.exit(1);
  }, timeout);

  function tools(label, context, page) {
    return {
      label,
      page,
      context,
      async shot(name) {
        current.shots += 1;
        if (dir) {
          await page.screenshot({
            path: join(dir, `${current.name}-${String(current.shots).padStart(2, '0')}-${name}.png`),
            fullPage: true,
          });
        }
      },
      // The trimmed text of the first element matching SELECTOR.
      async text(selector) {
        return ((await page.locator(selector).first().textContent()) || '').trim();
      },
      // Waits until SELECTOR shows text matching RE; returns that text.
      async until(selector, re) {
        const l = page.locator(selector).filter({ hasText: re }).first();
        await l.waitFor();
        return ((await l.textContent()) || '').trim();
      },
      // The newest mail queued to EMAIL (the test-only mailbox of the .t):
      // {"template", "link", "vars"}.
      async mail(email, template = '') {
        const r = await page.request.get(`${base}/test/last-mail?email=`
          + `${encodeURIComponent(email)}&template=${template}`);
        return r.json();
      },
    };
  }

  async function person(label) {
    if (people.has(label)) return people.get(label);
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    const who = `${label}: `;

    page.on('pageerror', (err) => current.errors.push(`${who}pageerror: ${err.message}`));
    page.on('console', (msg) => {
      // Chromium reports every 4xx as a console error; those are judged
      // from the API answers instead.
      if (msg.type() === 'error'
          && !/^Failed to load resource: the server responded with a status of/
            .test(msg.text())) {
        current.errors.push(`${who}console: ${msg.text()}`);
      }
    });
    page.on('requestfailed', (req) => {
      const f = req.failure()?.errorText || '';
      // Leaving a page cancels what it was still loading.
      if (f !== 'net::ERR_ABORTED') current.errors.push(`${who}requestfailed: ${req.url()} ${f}`);
    });
    page.on('response', (res) => {
      const u = new URL(res.url());
      if (u.pathname.startsWith('/api/')) {
        (current.api[label] ||= []).push(`${res.request().method()} ${u.pathname} ${res.status()}`);
      } else if (res.status() >= 400) {
        current.errors.push(`${who}${res.url()} ${res.status()}`);
      }
    });

    const p = tools(label, context, page);
    people.set(label, p);
    return p;
  }

  let ok = true;
  try {
    browser = await launchBrowser();
    for (const name of names) {
      const started = Date.now();
      current = { name, shots: 0, steps: [], step_seconds: {}, errors: [], api: {} };
      out[name] = current;
      const step = (s) => {
        current.steps.push(s);
        current.step_seconds[s] = (Date.now() - started) / 1000;
      };
      try {
        await flows[name]({ base, state, result: current, person, step });
      } catch (err) {
        ok = false;
        current.errors.push(`${name}: ${err.message.split('\n')[0]}`);
        if (dir) {
          for (const [label, p] of people) {
            await p.page.screenshot({ path: join(dir, `${name}-failed-${label}.png`),
                                      fullPage: true }).catch(() => {});
          }
        }
      }
      current.seconds = (Date.now() - started) / 1000;
      delete current.name;
      delete current.shots;
      if (!ok) break;
    }
  } catch (err) {
    ok = false;
    (current || (out.launch = { errors: [] })).errors.push(`launch: ${err.message.split('\n')[0]}`);
  } finally {
    if (browser) await browser.close().catch(() => {});
    clearTimeout(watchdog);
  }
  print();
  process.exit(ok ? 0 : 1);
}

// Signs in through signin.html and the mailed link like a person: the
// form, "Check your mail", the link, "Sign in" on confirm.html.  Starts
// from the link SELECTOR of the page the person is on (which carries the
// way back), or on signin.html.  Resolves once the browser left
// confirm.html.
export async function signIn(p, base, email, { from = null } = {}) {
  const { page } = p;
  if (from) {
    await Promise.all([
      page.waitForURL(/\/signin\.html/),
      page.locator(from).click(),
    ]);
  } else {
    await page.goto(`${base}/signin.html`);
  }
  await page.locator('#email').fill(email);
  await page.locator('#consent').check();
  await page.locator('#submit').click();
  await p.until('#message', /Check your mail/);
  const m = await p.mail(email);
  if (!m || !m.link) throw new Error(`no sign-in mail for ${email}`);
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.endsWith('/confirm.html')),
    page.locator('#confirm').click(),
  ]);
}

// Registers EMAIL for the event through event.html and the mailed link,
// like a person not signed in; resolves on the page the link leads to.
export async function register(p, base, eventId, email, name) {
  const { page } = p;
  await page.goto(`${base}/event.html?id=${eventId}`);
  await page.locator('#register').waitFor();
  await page.getByLabel('Email address', { exact: true }).fill(email);
  await page.getByLabel('Your name').fill(name);
  await page.locator('#accept_terms').check();
  await page.locator('#gdpr_consent').check();
  await page.locator('#submit').click();
  const sent = await p.until('#message', /Check your mail/);
  const m = await p.mail(email, 'registration_link');
  if (!m || !m.link) throw new Error(`no registration mail for ${email}`);
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.endsWith('/confirm.html')),
    page.locator('#confirm').click(),
  ]);
  return { sent, mail: m };
}
