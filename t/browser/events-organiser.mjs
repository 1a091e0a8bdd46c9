// events-organiser.mjs: an organiser (olga@example.org) sets up a free
// hackathon through the organiser pages, the way a person would (run by
// events.mjs; t/56-browser-events.t judges it).  Leaves state.org and
// state.event.
//
//   1. organiser/ offers to sign in; signin.html, the mailed link,
//      confirm.html: back on organiser/, which offers to create an
//      organisation (none yet); it is created.
//   2. "New event": the editor.  An empty title is refused with a
//      sentence at the field; an end before the start comes back from the
//      API as a sentence at the "Ends" field; fixed, the draft is saved.
//   3. Publish without ticket types: the API's sentence shows at the
//      ticket types.  A ticket type with no places is refused at the
//      field; a free one is added, changed, a second one added and
//      deleted.
//   4. Publish: the status reads "Published"; the organisation's list
//      shows the event as published; another organiser is added.

import { signIn } from './flow.mjs';

export const TITLE = 'RustFest Hackathon';

export default async function organiser({ base, state, result, person, step }) {
  const email = 'olga@example.org';
  const title = TITLE;
  const o = await person('organiser');
  const { page, shot, text, until } = o;

  // 1. Sign in, create the organisation.
  await page.goto(`${base}/organiser/`);
  await page.locator('#signed-out').waitFor();
  result.signed_out = await text('#signed-out h2');
  await signIn(o, base, email, { from: '#signin-link' });
  await page.waitForURL(/\/organiser\/$/);
  await page.locator('#create-org-section').waitFor();
  await shot('create-org');

  await page.locator('#create-org-submit').click();
  result.org_empty = await until('.field-error', /\S/);
  await page.locator('#org-name').fill('Rust Community');
  await page.locator('#create-org-submit').click();
  result.org_created = await until('#create-org-message', /created/);
  result.org = new URL(page.url()).searchParams.get('org');
  state.org = result.org;
  result.current_empty = await until('#current', /No current events/);
  result.org_title = await until('#org-title', /Rust Community/);
  result.stripe_current = await until('#stripe-current', /\S/);
  result.organisers = await text('#organisers');
  step('organisation');

  // 2. The editor.
  await Promise.all([
    page.waitForURL(/\/organiser\/event\.html\?org=\d+$/),
    page.getByRole('link', { name: 'New event' }).click(),
  ]);
  await page.locator('#editor').waitFor();
  await page.locator('#save').click();
  result.title_missing = await until('#title-error', /\S/);
  result.title_invalid = await page.locator('#title').getAttribute('aria-invalid');

  await page.getByLabel('Title').fill(title);
  await page.getByLabel('Description').fill('Build things with Rust for two days.\n\n'
                                            + 'Teams of three; prizes for the best.');
  await page.getByLabel('Type of event').selectOption('hackathon');
  await page.getByLabel('Time zone of the event').selectOption('Europe/Paris');
  await page.getByLabel('Starts').fill('2031-03-10T10:00');
  await page.getByLabel('Ends').fill('2031-03-09T18:00');
  await page.getByLabel('Capacity').fill('100');
  await page.getByLabel('Cover image address').fill(`${base}/test/cover.svg`);
  await page.getByLabel('Breakout rooms for teams').check();
  await page.getByLabel('Team size').fill('3');
  await page.locator('#save').click();
  result.end_error = await until('#ends_at-error', /\S/);
  result.end_described = await page.locator('#ends_at').getAttribute('aria-describedby');
  result.title_error_gone = await page.locator('#title-error').count();
  await shot('end-before-start');

  await page.getByLabel('Ends').fill('2031-03-11T18:00');
  await page.locator('#save').click();
  result.saved = await until('#editor-message', /draft is saved/);
  result.event = new URL(page.url()).searchParams.get('id');
  state.event = result.event;
  result.status_draft = await text('#status');
  result.end_error_gone = await page.locator('#ends_at-error').count();
  step('draft');

  // 3. Publish too early, ticket types.
  await page.locator('#publish').click();
  result.publish_error = await until('[data-field="ticket_types"] + .field-error', /\S/);
  result.publish_message = await text('#publish-message');
  await shot('publish-refused');

  await page.locator('#tt-name').fill('Standard');
  await page.locator('#tt-submit').click();
  result.quantity_missing = await until('#tt-quantity-error', /\S/);
  await page.locator('#tt-quantity').fill('50');
  await page.locator('#tt-price').fill('0');
  await page.locator('#tt-submit').click();
  result.tt_added = await until('#tt-message', /added/);
  await page.getByRole('button', { name: 'Change Standard' }).click();
  await page.locator('#tt-name').fill('Community pass');
  await page.locator('#tt-submit').click();
  result.tt_changed = await until('#tt-message', /saved/);

  await page.locator('#tt-name').fill('Spare');
  await page.locator('#tt-quantity').fill('5');
  await page.locator('#tt-submit').click();
  await until('#tt-message', /Spare is added/);
  await page.getByRole('button', { name: 'Delete Spare' }).click();
  await page.getByRole('button', { name: 'Delete Spare' }).filter({ hasText: 'Really' }).click();
  result.tt_deleted = await until('#tt-message', /deleted/);
  result.ticket_rows = await page.locator('#ticket-types tr')
    .evaluateAll((rows) => rows.map((r) => [...r.cells].slice(0, 4)
      .map((c) => c.textContent.trim()).join(' | ')));
  step('ticket types');

  // 4. Publish.
  await page.locator('#publish').click();
  result.published = await until('#publish-message', /Published/);
  result.status = await text('#status');
  result.public_link = await page.locator('#public-link').getAttribute('href');
  result.publish_error_gone = await page.locator('.field-error').count();
  await shot('published');

  await page.locator('#back').click();
  await page.waitForURL(/\/organiser\/\?org=\d+$/);
  await until('#current', title);
  result.listed = await page.locator('#current tr').evaluateAll((rows) =>
    rows.map((r) => [...r.cells].map((c) => c.innerText.trim().replace(/\s+/g, ' '))));
  await shot('list');

  await page.getByLabel('Their email address').fill('otto@example.org');
  await page.locator('#invite-submit').click();
  result.invited = await until('#invite-message', /organiser/);
  step('published');
}
