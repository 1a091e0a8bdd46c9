// rentals.mjs BASE FLOW...: the page flows of the rentals pages (html/b/,
// html/owner/) in one headless Chromium (flow.mjs); t/102-rentals-browser.t
// sets up the business and judges the JSON line printed.
//
//   book    a guest on the public site: the homes, a property page with
//           its photos and taken dates, a quote (a stay shorter than the
//           minimum refused at the field), the booking form, the mailed
//           link, the booking page going to the Stripe-format payment
//           page, paying, back to a confirmed booking
//   owner   the owner's page: homes, the booking just made

import { runFlows } from './flow.mjs';

const day = (n) => new Date(Date.now() + n * 86400000).toISOString().slice(0, 10);

async function book({ base, result, person, step }) {
  const g = await person('guest');
  const { page } = g;

  await page.goto(`${base}/b/ann-stays/`);
  result.site_name = await g.until('#name', /Ann Stays/);
  await Promise.all([
    page.waitForURL(/\/b\/ann-stays\/property\.html\?id=\d+$/),
    page.getByRole('link', { name: 'Sea View' }).click(),
  ]);
  result.property_name = await g.until('#name', /Sea View/);
  result.photos = await page.locator('#photos img').count();
  result.booked = await g.text('#booked');
  step('property');

  await page.getByLabel('Check-in').fill(day(20));
  await page.getByLabel('Check-out').fill(day(21));
  await page.getByLabel('Guests').fill('2');
  await page.locator('#quote').click();
  result.short_stay = await g.until('.field-error', /\S/);
  await page.getByLabel('Check-out').fill(day(23));
  await page.locator('#quote').click();
  result.price = await g.until('#price', /nights/);
  step('quote');

  await page.getByLabel('Your name').fill('Gus Guest');
  await page.getByLabel('Your email').fill('gus@example.org');
  await page.locator('#submit').click();
  result.sent = await g.until('#message', /sent the link/);
  const m = await g.mail('gus@example.org', 'rentals_booking_link');
  if (!m || !m.link) throw new Error('no booking mail');
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL(/\/pay\/cs_test_/),
    page.locator('#confirm').click(),
  ]);
  step('checkout');

  await Promise.all([
    page.waitForURL(/\/b\/ann-stays\/booking\.html\?id=\d+&session_id=/),
    page.getByRole('button', { name: /pay/i }).click(),
  ]);
  result.confirmed = await g.until('#message', /confirmed/);
  result.summary = await g.text('#summary');
  step('paid');
}

async function owner({ base, result, person, step }) {
  const o = await person('owner');
  const { page } = o;
  const m = await o.mail('ann@example.org');
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL(/\/owner\/$/),
    page.locator('#confirm').click(),
  ]);
  result.business = await o.until('#business-name', /Ann Stays/);
  result.homes = await o.text('#properties');
  result.bookings = await o.until('#bookings', /Gus Guest/);
  step('owner');
}

runFlows({ book, owner });
