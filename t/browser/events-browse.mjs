// events-browse.mjs: a visitor finds the organiser's event on the public
// pages (run by events.mjs after events-organiser.mjs; t/56-browser-events.t
// judges it):
//
//   1. index.html links to events.html, which lists upcoming events ten at
//      a time; "More events" appends the next page until there is none.
//   2. The type filter (applies at once, kept in the address); the title
//      search box with a date range; an end date before the start date is
//      refused with a sentence at the field; the back button returns to
//      the previous search.
//   3. The event page: title, organisation, times in the event's zone,
//      the ticket table, the registration form; registering with the
//      boxes unticked gives sentences at the boxes (nothing is sent).

import { TITLE as title } from './events-organiser.mjs';

export default async function browse({ base, result, person, step }) {
  const v = await person('visitor');
  const { page, shot, text, until } = v;

  const titles = () => page.locator('#results h3').allTextContents();

  // 1. The list.
  await page.goto(`${base}/`);
  await Promise.all([
    page.waitForURL(/\/events\.html$/),
    page.getByRole('link', { name: 'Browse upcoming events' }).click(),
  ]);
  await until('#count', /upcoming/);
  result.first_page = (await titles()).length;
  result.first_count = await text('#count');
  result.more_visible = await page.locator('#more').isVisible();
  await shot('list');
  await page.locator('#more').click();
  await page.locator('#more').waitFor({ state: 'hidden' });
  result.all = await titles();
  result.all_count = await text('#count');
  step('list');

  // 2. Filters.
  await page.getByLabel('Type').selectOption('hackathon');
  await page.waitForURL(/type=hackathon/);
  await until('#count', /Hackathon/);
  result.hackathons = await titles();
  result.type_count = await text('#count');

  await page.getByLabel('Type').selectOption('');
  await page.waitForURL((u) => !u.search.includes('type='));
  await until('#count', /^\d+\+? upcoming events\.$/);
  await page.getByLabel('Title contains').fill('rust');
  await page.getByLabel('From').fill('2031-03-12');
  await page.getByLabel('To').fill('2031-03-01');
  await page.locator('#search').click();
  result.range_error = await until('#to-error', /\S/);
  await page.getByLabel('To').fill('2031-03-31');
  await page.locator('#search').click();
  await until('#count', /title contains/);
  result.after_12th = await titles();
  await page.getByLabel('From').fill('2031-03-10');
  await page.locator('#search').click();
  await until('#count', /2031-03-10 to/);
  result.search = await titles();
  result.search_count = await text('#count');
  result.search_url = new URL(page.url()).search;
  await shot('search');

  await page.goBack();
  await until('#count', /2031-03-12 to/);
  result.back_from = await page.getByLabel('From').inputValue();

  await page.getByLabel('Title contains').fill('no such thing');
  await page.locator('#search').click();
  result.none = await until('#count', /No upcoming/);
  step('filters');

  // 3. The event page.
  await page.getByLabel('Title contains').fill(title);
  await page.getByLabel('From').fill('');
  await page.getByLabel('To').fill('');
  await page.locator('#search').click();
  await until('#results', title);
  await Promise.all([
    page.waitForURL(/\/event\.html\?id=\d+$/),
    page.getByRole('link', { name: title }).click(),
  ]);
  await page.locator('#event').waitFor();
  result.event_title = await text('#title');
  result.page_title = await page.title();
  result.organisation = await text('#organisation');
  result.when = await text('#when');
  result.zone = await text('#zone');
  result.format = await text('#format');
  result.description = await page.locator('#description p').allTextContents();
  result.tickets = await page.locator('#tickets tr').evaluateAll((rows) =>
    rows.map((r) => [...r.cells].map((c) => c.textContent.trim()).join(' | ')));
  result.options = await page.locator('#ticket_type_id option').allTextContents();

  await page.locator('#submit').click();
  result.empty_errors = await page.locator('.field-error').allTextContents();
  result.focused = await page.evaluate(() => document.activeElement.id);

  await page.getByLabel('Email address', { exact: true }).fill('vera.example.org');
  await page.getByLabel('Your name').fill('Vera Visitor');
  await page.locator('#accept_terms').check();
  await page.locator('#submit').click();
  result.bad_email = await text('#email-error');
  await page.getByLabel('Email address', { exact: true }).fill('vera@example.org');
  await page.locator('#submit').click();
  result.consent_error = await until('#gdpr_consent-error', /\S/);
  result.consent_errors = await page.locator('.field-error').count();
  result.consent_message = await text('#message');
  await shot('consent-missing');
  step('event page');
}
