// events-teams.mjs: teams and submissions through the pages, four people
// at once (run by events.mjs after events-register.mjs;
// t/56-browser-events.t judges it):
//
//   0. A second participant (sam@example.org) registers like the first.
//   1. The organiser's event page lists the registrations; two teams are
//      made (the team form refuses a missing number first); one person is
//      moved into the other's team; the submission deadline is set.
//   2. The participant opens team.html: the team, its members, the
//      deadline; an empty submission is refused at the fields; the work
//      is handed in, then changed.
//   3. Someone not signed in opens team.html: an offer to sign in and the
//      "email me my team link" form, which says to check the mail.
//   4. The organiser reloads: the submission is listed, and on the team.
//   5. The participant cancels the free ticket on my-events.html.

import { register } from './flow.mjs';

export default async function teams({ base, state, result, person, step }) {
  const { org, event: eventId } = state;
  const email = 'vera@example.org';

  // 0. Sam.
  const sam = await person('sam');
  await register(sam, base, eventId, 'sam@example.org', 'Sam Second');
  result.sam = await sam.until('#state', /confirmed/);

  const o = await person('organiser');
  const v = await person('visitor');

  // 1. The organiser.
  await o.page.goto(`${base}/organiser/event.html?org=${org}&id=${eventId}`);
  await o.page.locator('#registrations tr td').first().waitFor();
  result.registrations = await o.page.locator('#registrations tr').evaluateAll((rows) =>
    rows.map((r) => [...r.cells].slice(0, 4).map((c) => c.textContent.trim()).join(' | ')));
  result.registrations_summary = await o.text('#registrations-summary');
  result.before_split = await o.until('#split-message', /ticket/);

  await o.page.getByLabel('A given number of teams').check();
  await o.page.getByLabel('Number of teams', { exact: true }).fill('');
  await o.page.locator('#split-submit').click();
  result.split_missing = await o.until('#split-value-error', /\S/);
  await o.page.getByLabel('Number of teams', { exact: true }).fill('2');
  await o.page.locator('#split-submit').click();
  result.split = await o.until('#split-message', /teams made/);
  result.teams = await o.page.locator('#teams .team h3').allTextContents();

  // Move the other person into the visitor's team.
  const visitorTeam = await o.page.locator('#teams .team', { hasText: email })
    .getAttribute('data-team');
  const other = await o.page.locator('#move-user option')
    .filter({ hasNotText: 'Vera' }).first().textContent();
  await o.page.getByLabel('Person').selectOption({ label: other });
  await o.page.getByLabel('To team').selectOption({ label: visitorTeam });
  await o.page.locator('#move-submit').click();
  result.moved = await o.until('#move-message', /now in/);
  await o.until(`#teams .team[data-team="${visitorTeam}"] h3`, /2 people/);
  result.teams_after = await o.page.locator('#teams .team h3').allTextContents();
  result.visitor_team = visitorTeam;

  await o.page.getByLabel('Teams can submit their work until').fill('2031-03-11T16:00');
  await o.page.locator('#deadline-submit').click();
  result.deadline = await o.until('#deadline-message', /hand in until/);
  result.no_submissions = await o.text('#submissions');
  await o.shot('teams');
  step('teams made');

  // 2. The participant.
  await v.page.goto(`${base}/team.html?event=${eventId}`);
  await v.page.locator('#team-section').waitFor();
  result.team_name = await v.text('#team-name');
  result.members = await v.page.locator('#members li').allTextContents();
  result.team_deadline = await v.text('#deadline');
  result.team_event = await v.text('#event-link');

  await v.page.locator('#submit').click();
  result.submission_errors = await v.page.locator('.field-error').allTextContents();
  await v.page.getByLabel('Title of your work').fill('Crab Cam');
  await v.page.getByLabel('Link to it').fill('ftp://example.org/crab');
  await v.page.locator('#submit').click();
  result.link_error = await v.until('#link-error', /\S/);
  await v.page.getByLabel('Link to it').fill('https://example.org/crab-cam');
  await v.page.getByLabel('Description').fill('A webcam that counts crabs.');
  await v.page.locator('#submit').click();
  result.handed_in = await v.until('#message', /Handed in/);
  result.button_after = await v.text('#submit');
  await v.page.getByLabel('Title of your work').fill('Crab Cam 2');
  await v.page.locator('#submit').click();
  result.changed = await v.until('#message', /Crab Cam 2/);
  await v.shot('team');
  step('handed in');

  // 3. Someone not signed in.
  const s = await person('stranger');
  await s.page.goto(`${base}/team.html?event=${eventId}`);
  await s.page.locator('#no-team').waitFor();
  result.stranger_text = await s.text('#no-team-text');
  result.stranger_signin = await s.page.locator('#signin-link').getAttribute('href');
  await s.page.locator('#link-submit').click();
  result.stranger_empty = await s.until('#email-error', /\S/);
  await s.page.getByLabel('Email address').fill(email);
  await s.page.locator('#link-submit').click();
  result.stranger_sent = await s.until('#link-message', /Check your mail/);
  await s.shot('team-link');
  const m = await s.mail(email, 'team_assigned');
  result.team_mail_link = m.link;
  step('team link');

  // 4. The organiser sees the work.
  await o.page.reload();
  await o.page.locator('#submissions .card').first().waitFor();
  result.submissions = (await o.page.locator('#submissions .card').first().innerText())
    .split('\n').map((x) => x.trim()).filter(Boolean);
  result.team_card = await o.text(`#teams .team[data-team="${visitorTeam}"] p`);
  await o.shot('submissions');
  step('seen');

  // 5. The participant gives the ticket back (my events links the team).
  await v.page.goto(`${base}/my-events.html`);
  const card = v.page.locator('#upcoming .card').first();
  await card.waitFor();
  result.my_team_link = await card.locator('a.team-link').getAttribute('href');
  result.my_team_text = await card.locator('a.team-link').innerText();
  await card.getByRole('button', { name: 'Cancel my ticket' }).click();
  result.cancel_confirm = await v.until('#upcoming-message', /Press again/);
  await card.getByRole('button', { name: 'Yes, give my place back' }).click();
  result.cancelled = await v.until('#upcoming-message', /is cancelled/);
  result.cancelled_card = await v.until('#upcoming .card .bad', /\S/);
  result.cancel_buttons = await v.page.locator('#upcoming button').count();
  await v.shot('cancelled');
  step('cancelled');
}
