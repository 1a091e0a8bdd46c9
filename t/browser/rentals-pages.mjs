// rentals-pages.mjs BASE owner guest: the rentals calendars and the
// channels page in headless Chromium (flow.mjs);
// t/108-rentals-pages-browser.t sets up the business (PAGES_* in the
// environment) and judges the JSON line printed.
//
//   owner  signs in by the mailed link to /owner/; the calendar shows the
//          booking on its nights and its details on a click; the channels
//          page saves Airbnb's keys, retries a dead push, resolves a
//          booking conflict
//   guest  the public property page: the calendar shows the taken
//          nights; arrival and departure clicked; the price follows

import { runFlows } from './flow.mjs';

const env = process.env;
const addDays = (s, n) => {
  const d = new Date(`${s}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
};

// Clicks NEXT until a button for DAY is on the page (the grids show one
// or two months from this one).
async function showDay(page, container, next, day) {
  const b = page.locator(`${container} button[data-date="${day}"]`).first();
  for (let i = 0; i < 4 && !(await b.count()); i++) {
    await page.locator(next).click();
    await page.waitForTimeout(300);
  }
  await b.waitFor();
  return b;
}

async function dayText(page, day) {
  const td = page.locator(`#calendar td[data-date="${day}"]`);
  return (await td.count()) ? ((await td.textContent()) || '').trim() : '';
}

async function owner({ result, person, step }) {
  const o = await person('owner');
  const { page } = o;
  const m = await o.mail('ann@example.org');
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL(/\/owner\/$/),
    page.locator('#confirm').click(),
  ]);
  await o.until('#properties', /Sea View/);

  const bin = env.PAGES_BOOKED_IN;
  const bout = env.PAGES_BOOKED_OUT;
  await showDay(page, '#calendar', '#cal-next', bin);
  result.day_in = await dayText(page, bin);
  // The other days may be in the next month.
  const last = addDays(bout, -1);
  await showDay(page, '#calendar', '#cal-next', last);
  result.day_last = await dayText(page, last);
  result.day_out = await dayText(page, bout);
  result.day_before = await dayText(page, addDays(bin, -1));
  step('calendar');

  await page.locator(`#calendar button[data-date="${last}"]`).first().click();
  result.detail = await o.until('#cal-detail', /Carla Guest/);
  await o.shot('calendar');
  step('detail');

  await Promise.all([
    page.waitForURL(/\/owner\/channels\.html$/),
    page.getByRole('link', { name: /Channels/ }).click(),
  ]);
  result.bcom_before = await o.until('#channels tr[data-kind=booking_com]', /ending/);
  result.airbnb_before = await o.text('#channels tr[data-kind=airbnb]');
  await page.locator('#kind').selectOption('airbnb');
  await page.getByLabel('API key', { exact: true }).fill('abnb-secret-key-4321');
  await page.getByLabel('Webhook secret', { exact: true }).fill('whsec_abnb_2');
  await page.getByRole('button', { name: 'Save' }).click();
  result.keys_message = await o.until('#keys-message', /Saved/);
  result.airbnb_after = await o.until('#channels tr[data-kind=airbnb]', /ending/);
  result.page_after = await page.locator('main').innerText();
  result.api_key_field = await page.getByLabel('API key', { exact: true }).inputValue();
  step('keys');

  result.dead = await o.until('#dead', /booking_com/);
  await page.locator('#dead button', { hasText: 'Retry' }).first().click();
  result.dead_message = await o.until('#dead-message', /Queued again/);
  step('dead');

  result.errors_before = await o.until('#errors', /Dan Double/);
  await page.locator('#errors input').first().fill('Moved Dan');
  await page.locator('#errors button', { hasText: 'Resolve' }).first().click();
  result.errors_message = await o.until('#errors-message', /resolved/);
  result.errors_after = await o.until('#errors', /None open/);
  await o.shot('channels');
  step('resolve');
}

async function guest({ base, result, person, step }) {
  const g = await person('guest');
  const { page } = g;
  await page.goto(`${base}/b/ann-pages/property.html?id=${env.PAGES_PROPERTY}`);
  await g.until('#name', /Sea View/);

  const bin = env.PAGES_BOOKED_IN;
  const bout = env.PAGES_BOOKED_OUT;
  const booked = await showDay(page, '#months', '#cal-next', bin);
  result.booked_label = await booked.getAttribute('aria-label');
  const freeOut = await showDay(page, '#months', '#cal-next', bout);
  result.booked_out_label = await freeOut.getAttribute('aria-label');
  step('calendar');

  // A stay over taken nights is refused: arrival before, departure after.
  await page.goto(`${base}/b/ann-pages/property.html?id=${env.PAGES_PROPERTY}`);
  await g.until('#name', /Sea View/);
  await (await showDay(page, '#months', '#cal-next', addDays(bin, -2))).click();
  await (await showDay(page, '#months', '#cal-next', addDays(bout, -1))).click();
  result.refused = await g.until('#cal-pick', /taken/);

  // The stay of the test: arrival by the keyboard (from the day before
  // with the arrow key when it is shown), departure by a click.
  const arrive = await showDay(page, '#months', '#cal-next', env.PAGES_IN);
  const before = page.locator(`#months button[data-date="${addDays(env.PAGES_IN, -1)}"]`);
  if (await before.count()) {
    await before.focus();
    await page.keyboard.press('ArrowRight');
  } else {
    await arrive.focus();
  }
  result.focused = await page.evaluate(() => document.activeElement.dataset.date);
  await page.keyboard.press('Enter');
  result.arrival_label = await page
    .locator(`#months button[data-date="${env.PAGES_IN}"]`).getAttribute('aria-label');
  step('arrival');
  await (await showDay(page, '#months', '#cal-next', env.PAGES_OUT)).click();
  result.check_in = await page.locator('input[name=check_in]').inputValue();
  result.check_out = await page.locator('input[name=check_out]').inputValue();
  step('departure');
  result.price = await g.until('#price', /nights/);
  await g.shot('quote');
  step('quote');
}

runFlows({ owner, guest });
