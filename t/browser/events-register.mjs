// events-register.mjs: the visitor (vera@example.org, not signed in)
// registers for the organiser's free event, the way a person would (run by
// events.mjs; t/56-browser-events.t judges it):
//
//   1. event.html: the form filled and sent: "Check your mail".
//   2. The mailed link (read from the test-only mailbox) opens
//      confirm.html; "Sign in": the browser lands on registration.html,
//      which shows the ticket, its code and the calendar file (fetched:
//      text/calendar).
//   3. "My events" lists the ticket with its links.
//   4. The event page again, now signed in: the form is prefilled; a
//      second registration is refused with the API's sentence.

export default async function register({ base, state, result, person, step }) {
  const [eventId, email, name] = [state.event, 'vera@example.org', 'Vera Visitor'];
  const v = await person('visitor');
  const { page, shot, text, until, mail } = v;

  // 1. The form.
  await page.goto(`${base}/event.html?id=${eventId}`);
  await page.locator('#register').waitFor();
  await page.getByLabel('Email address', { exact: true }).fill(email);
  await page.getByLabel('Your name').fill(name);
  await page.locator('#accept_terms').check();
  await page.locator('#gdpr_consent').check();
  await page.locator('#submit').click();
  result.sent = await until('#message', /Check your mail/);
  result.form_hidden = await page.locator('#register').isHidden();
  await shot('check-mail');
  step('registered');

  // 2. The link.
  const m = await mail(email, 'registration_link');
  result.mail_template = m.template;
  result.link = m.link;
  await page.goto(m.link);
  await Promise.all([
    page.waitForURL(/\/registration\.html\?id=\d+$/),
    page.locator('#confirm').click(),
  ]);
  result.landed = new URL(page.url()).pathname + new URL(page.url()).search;
  result.state = await until('#state', /confirmed/);
  result.reg_title = await text('#reg-title');
  result.event_link = await text('#event-link');
  result.ticket_type = await text('#ticket-type');
  result.ticket_name = await text('#ticket-name');
  result.code = await text('#ticket-code');
  result.ics = await page.locator('#ics').getAttribute('href');
  const ics = await page.request.get(`${base}${result.ics}`);
  result.ics_status = ics.status();
  result.ics_type = ics.headers()['content-type'];
  result.ics_summary = ((await ics.text()).match(/^SUMMARY:(.*)\r$/m) || [])[1] || null;
  await shot('ticket');
  step('ticket');

  // 3. My events.
  await Promise.all([
    page.waitForURL(/\/my-events\.html$/),
    page.locator('#ticket').getByRole('link', { name: 'My events' }).click(),
  ]);
  await page.locator('#upcoming .card').first().waitFor();
  result.my_upcoming = await page.locator('#upcoming .card h3').allTextContents();
  result.my_card = (await page.locator('#upcoming .card').first().innerText())
    .split('\n').map((s) => s.trim()).filter(Boolean);
  result.my_pending_hidden = await page.locator('#pending-section').isHidden();
  await shot('my-events');
  step('my events');

  // 4. Registering again, signed in.
  await page.goto(`${base}/event.html?id=${eventId}`);
  await page.locator('#register').waitFor();
  await page.waitForFunction(() => document.getElementById('email').value !== '');
  result.prefilled = await page.getByLabel('Email address', { exact: true }).inputValue();
  await page.getByLabel('Your name').fill(name);
  await page.locator('#accept_terms').check();
  await page.locator('#gdpr_consent').check();
  await page.locator('#submit').click();
  result.again = await until('#message', /already/);
  result.again_link = await page.locator('#message a').getAttribute('href');
  result.places = await page.locator('#tickets td').nth(1).textContent();
  await shot('again');
  step('again');
}
