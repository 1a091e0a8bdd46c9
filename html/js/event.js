// event.js: one event and its registration form (event.html?id=N).
//
//   GET  /api/events/{id}                  the published event, its
//                                          organisation and ticket types
//   GET  /api/me                           prefills the form when signed in
//   POST /api/events/{id}/registrations    {"ticket_type_id", "email",
//        "name", "accept_terms", "gdpr_consent"} -> 202 {"status":
//        "pending", "registration"}: a link is mailed to confirm; signed in
//        as that address the registration is confirmed at once and the
//        page goes on to registration.html?id=N.
//
// Times are shown in the event's time zone (where it happens), with the
// person's own time beside them when that differs.

import { api, say, el, clearErrors, showError, fieldError, idParam,
         signedIn } from '/js/api.js';
import { businessTypeName, money, range, when, zoneName, localZone }
  from '/js/format.js';

const $ = (id) => document.getElementById(id);

const id = idParam('id');
const form = $('register');
const message = $('message');
let event = null;

function fail(text) {
  $('loading').textContent = text;
  $('loading').className = 'bad';
}

// Why a ticket type cannot be bought now, or null when it can.
function closedBecause(t, now = new Date()) {
  if (t.sales_start && now < new Date(t.sales_start)) {
    return `Sales open ${when(t.sales_start, event.time_zone)}.`;
  }
  if (t.sales_end && now >= new Date(t.sales_end)) return 'Sales have closed.';
  if (t.remaining <= 0) return 'Sold out.';
  return null;
}

function salesText(t) {
  const closed = closedBecause(t);
  if (closed) return closed;
  if (t.sales_end) return `On sale until ${when(t.sales_end, event.time_zone)}.`;
  return 'On sale.';
}

function renderEvent(e) {
  document.title = `${e.title} \u00b7 Platform`;
  $('title').textContent = e.title;
  $('type').textContent = businessTypeName(e.business_type);
  $('organisation').textContent = e.organisation || 'an organiser';
  for (const s of document.querySelectorAll('.org-name')) {
    s.textContent = e.organisation || 'the organiser';
  }
  $('when').textContent = range(e.starts_at, e.ends_at, e.time_zone);
  $('zone').textContent = zoneName(e.time_zone, new Date(e.starts_at));
  const mine = localZone();
  if (mine !== e.time_zone
      && range(e.starts_at, e.ends_at, mine) !== range(e.starts_at, e.ends_at, e.time_zone)) {
    $('local').textContent = `Your time: ${range(e.starts_at, e.ends_at, mine)} `
                             + `(${zoneName(mine, new Date(e.starts_at))}).`;
    $('local').hidden = false;
  }

  const format = [];
  if (e.main_stage) format.push('a main stage with live video');
  if (e.breakouts) format.push('breakout rooms');
  if (e.team_size) format.push(`teams of ${e.team_size}`);
  if (format.length) {
    const s = format.join(', ');
    $('format').textContent = s[0].toUpperCase() + s.slice(1) + '.';
    $('format').hidden = false;
    $('format-label').hidden = false;
  }

  if (e.cover_url && /^https?:\/\//.test(e.cover_url)) {
    $('cover').src = e.cover_url;
    $('cover').hidden = false;
    $('cover').addEventListener('error', () => { $('cover').hidden = true; });
  }

  // Plain text; paragraphs at blank lines.
  const paras = (e.description || '').split(/\n\s*\n/).filter((p) => p.trim());
  $('description').replaceChildren(...paras.map((p) => el('p', {}, p.trim())));

  $('cancelled').hidden = e.status !== 'cancelled';

  const rows = e.ticket_types.map((t) => el('tr', {},
    el('th', { scope: 'row' }, t.name),
    el('td', {}, money(t.price_minor, t.currency)),
    el('td', {}, String(Math.max(t.remaining, 0))),
    el('td', {}, salesText(t))));
  $('tickets').replaceChildren(...rows);
  $('tickets-section').hidden = !rows.length;

  $('loading').hidden = true;
  $('event').hidden = false;
  renderForm(e);
}

function renderForm(e) {
  const section = $('register-section');
  section.hidden = false;
  const closed = $('register-closed');

  let why = null;
  if (e.status === 'cancelled') why = 'This event was cancelled: registration is closed.';
  else if (new Date(e.ends_at) <= new Date()) why = 'This event is over.';

  const open = e.ticket_types.filter((t) => !closedBecause(t));
  if (!why && !open.length) {
    why = e.ticket_types.length && e.ticket_types.every((t) => t.remaining <= 0)
      ? 'This event is sold out.'
      : 'No tickets are on sale right now.';
  }

  if (why) {
    closed.textContent = why;
    closed.hidden = false;
    form.hidden = true;
    return;
  }

  const select = $('ticket_type_id');
  select.replaceChildren(...open.map((t) => el('option', { value: String(t.id) },
    `${t.name} \u2014 ${money(t.price_minor, t.currency)}`
    + ` (${t.remaining} ${t.remaining === 1 ? 'place' : 'places'} left)`)));
  if (open.length > 1) {
    select.prepend(el('option', { value: '' }, 'Choose a ticket'));
    select.value = '';
  }
}

function validate() {
  const email = $('email');
  const checks = [
    ['ticket_type_id', !$('ticket_type_id').value, 'Please choose a ticket.'],
    ['email', !email.value.trim(), 'Please enter your email address.'],
    ['email', email.value.trim() && !email.checkValidity(),
     'This does not look like an email address. Check it for typing mistakes.'],
    ['name', !$('name').value.trim(), 'Please enter your name.'],
    ['accept_terms', !$('accept_terms').checked,
     'Please accept the terms to register.'],
    ['gdpr_consent', !$('gdpr_consent').checked,
     'Please agree to how your name and email address are used: '
     + 'the organiser needs them to let you in.'],
  ];
  let first = true;
  for (const [name, bad, text] of checks) {
    if (bad && !form.querySelector(`[name="${name}"][aria-invalid]`)) {
      fieldError(form, name, text, { focus: first });
      first = false;
    }
  }
  return first;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  say(message, '');
  if (!validate()) {
    say(message, 'Please correct the fields marked above.', 'bad');
    return;
  }

  const address = $('email').value.trim();
  const body = {
    ticket_type_id: Number($('ticket_type_id').value),
    email: address,
    name: $('name').value.trim(),
    accept_terms: true,
    gdpr_consent: true,
  };

  const submit = $('submit');
  submit.disabled = true;
  say(message, 'Registering\u2026');
  try {
    const res = await api(`/api/events/${id}/registrations`,
                          { method: 'POST', body });
    const reg = (res && res.registration) || {};
    if (res && res.status === 'pending') {
      form.hidden = true;
      say(message, `Check your mail: we sent a link to ${address} to confirm `
          + 'your registration. It works once, for 15 minutes. You can close '
          + 'this page.', 'ok');
    } else if (reg.id) {
      say(message, 'Registered. Opening your registration\u2026', 'ok');
      location.assign(`/registration.html?id=${encodeURIComponent(reg.id)}`);
    } else {
      form.hidden = true;
      say(message, 'You are registered.', 'ok');
    }
  } catch (err) {
    showError(err, { form, message });
    // Signed in as that address: the registration was refused (sold out,
    // a place already) and still has its page.
    const reg = err.body && err.body.registration;
    if (reg && reg.id) {
      message.append(' ', el('a', { href: `/registration.html?id=${reg.id}` },
                             'See this registration'), '.');
    } else if (err.status === 409 && /already have a place/.test(err.message)) {
      message.append(' ', el('a', { href: '/my-events.html' }, 'My events'), '.');
    }
  } finally {
    submit.disabled = false;
  }
});

async function load() {
  if (!id) {
    fail('This page needs an event number in its address, like '
         + 'event.html?id=12. Find events on the events page.');
    $('loading').append(' ', el('a', { href: '/events.html' }, 'All events'), '.');
    return;
  }
  try {
    event = await api(`/api/events/${id}`);
  } catch (err) {
    fail(err.status === 404
      ? 'There is no such event, or it is not published yet.'
      : err.message);
    return;
  }
  renderEvent(event);

  // Prefill from the account, if signed in (no harm otherwise).
  let me = null;
  try {
    me = await signedIn();
    if (me && !$('email').value) $('email').value = me.email;
    if (me && me.display_name && !$('name').value) $('name').value = me.display_name;
  } catch {
    // The form works without it.
  }
  // Who is signed in, for the video section (event-video.js), which may
  // start before or after this point.
  document.platformMe = me;
  document.dispatchEvent(new CustomEvent('platform:me', { detail: me }));
}

load();
