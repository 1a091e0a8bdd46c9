// rentals-comms.mjs BASE home: the owner's page of one home
// (html/owner/home.html) in headless Chromium (flow.mjs);
// t/107-rentals-comms-browser.t sets up the business and judges the JSON
// line printed.
//
//   home   from /owner/ to the home's page: key box codes (change the
//          code), the calendar address, importing a calendar (the sample
//          served by the test), mailing past guests

import { runFlows } from './flow.mjs';

async function home({ base, result, person, step }) {
  const o = await person('owner');
  const { page } = o;
  const m = await o.mail('ann@example.org');
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL(/\/owner\/$/),
    page.locator('#confirm').click(),
  ]);
  await o.until('#properties', /Sea View/);
  await Promise.all([
    page.waitForURL(/\/owner\/home\.html\?id=\d+$/),
    page.getByRole('link', { name: /Key codes, calendars/ }).click(),
  ]);
  result.name = await o.until('#name', /Sea View/);
  result.code_before = await o.until('#current-code', /\S/);
  step('page');

  await page.locator('#rotate').click();
  result.code_after = await o.until('#current-code', /^\d{6}$/);
  result.codes = await page.locator('#codes tr').count();
  result.keys_message = await o.until('#keys-message', /cleaner/);
  step('rotate');

  result.export_url = await page.locator('#export-url').inputValue();
  await page.getByLabel('Calendar address (.ics)')
            .fill(`${base}/feeds/airbnb.ics`);
  await page.locator('#feed button[type=submit]').click();
  result.feed = await o.until('#feeds', /ok: 3 dates blocked/);
  step('import');

  await page.getByLabel('Subject').fill('Free in June');
  await page.getByLabel('Message').fill('The second week of June is free.');
  await page.getByRole('button', { name: 'Send' }).click();
  result.announce = await o.until('#announce-message', /Sending to/);
  step('announce');
}

runFlows({ home });
