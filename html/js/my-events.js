// my-events.js: the participant's tickets (my-events.html).
//
//   GET  /api/me/tickets               {"upcoming": [...], "past": [...],
//                                      "registrations": [pending, held]}
//   POST /api/tickets/{code}/cancel    gives back a free ticket before the
//                                      event starts
//
// Each ticket links to its event, its calendar file (.ics), its
// registration page and, once the organiser made teams, its team's page
// (team.html?event=N).

import { api, say, el, signinHref } from '/js/api.js';
import { money, range, zoneName } from '/js/format.js';

const $ = (id) => document.getElementById(id);

const REG_STATE = {
  pending: 'Waiting for you to confirm your email address',
  held: 'Waiting for the payment',
};

function when(e) {
  return `${range(e.starts_at, e.ends_at, e.time_zone)} (${zoneName(e.time_zone, new Date(e.starts_at))})`;
}

function cancelButton(t) {
  const b = el('button', { type: 'button', class: 'small danger' }, 'Cancel my ticket');
  b.addEventListener('click', async () => {
    const message = $('upcoming-message');
    if (b.dataset.confirm !== 'yes') {
      b.dataset.confirm = 'yes';
      b.textContent = 'Yes, give my place back';
      say(message, `Press again to cancel your ticket for ${t.event.title}. `
          + 'Your place goes to someone else.');
      return;
    }
    b.disabled = true;
    say(message, 'Cancelling your ticket\u2026');
    try {
      await api(`/api/tickets/${encodeURIComponent(t.code)}/cancel`, { method: 'POST' });
      say(message, `Your ticket for ${t.event.title} is cancelled.`, 'ok');
      await load();
    } catch (err) {
      say(message, err.message, 'bad');
      b.disabled = false;
    }
  });
  return b;
}

function ticketCard(t, { upcoming }) {
  const e = t.event;
  const cancelled = t.status === 'cancelled' || e.status === 'cancelled';
  const status = e.status === 'cancelled' ? 'The event was cancelled.'
               : t.status === 'cancelled' ? 'You cancelled this ticket.' : null;
  const links = [];
  if (!cancelled) {
    links.push(el('a', { href: t.ics_url, download: 'event.ics' }, 'Add to calendar (.ics)'));
  }
  if (t.registration_id) {
    links.push(el('a', { href: `/registration.html?id=${t.registration_id}` }, 'Registration'));
  }
  if (t.team && !cancelled) {
    links.push(el('a', { href: `/team.html?event=${e.id}`, class: 'team-link' },
                  `Your team: ${t.team.name}`));
  }
  if (upcoming && !cancelled) {
    links.push(el('a', { href: `/room.html?event=${e.id}`, class: 'room-link' }, 'Event room'));
  }
  return el('li', { class: `card${cancelled ? ' cancelled' : ''}`, 'data-code': t.code },
    el('h3', {}, el('a', { href: `/event.html?id=${e.id}` }, e.title)),
    el('p', { class: 'when' }, when(e)),
    el('p', { class: 'muted' },
      `${t.ticket_type} \u00b7 ${money(t.amount_minor, t.currency)}`
      + (e.organisation ? ` \u00b7 by ${e.organisation}` : '')),
    status ? el('p', { class: 'bad' }, status) : null,
    el('p', { class: 'links' }, ...links.flatMap((l, i) => (i ? [' \u00b7 ', l] : [l]))),
    upcoming && t.can_cancel ? cancelButton(t) : null);
}

function registrationCard(r) {
  const e = r.event;
  return el('li', { class: 'card' },
    el('h3', {}, el('a', { href: `/event.html?id=${e.id}` }, e.title)),
    el('p', { class: 'when' }, when(e)),
    el('p', {}, `${REG_STATE[r.status] || r.status}. `,
       el('a', { href: `/registration.html?id=${r.id}` },
          r.status === 'held' ? 'Continue to the payment' : 'See the registration'),
       '.'));
}

function fillList(id, items, make, empty) {
  $(id).replaceChildren(...(items.length ? items.map(make)
    : [el('li', { class: 'muted empty' }, empty)]));
}

async function load() {
  let res;
  try {
    res = await api('/api/me/tickets');
  } catch (err) {
    $('loading').hidden = false;
    if (err.status === 401) {
      $('loading').hidden = true;
      $('signin-link').href = signinHref('/my-events.html');
      $('signed-out').hidden = false;
      return;
    }
    $('loading').textContent = err.message;
    $('loading').className = 'bad';
    return;
  }

  fillList('upcoming', res.upcoming, (t) => ticketCard(t, { upcoming: true }),
           'No upcoming events. Find one on the events page.');
  fillList('past', res.past, (t) => ticketCard(t, { upcoming: false }), 'None yet.');
  fillList('pending', res.registrations, registrationCard, '');
  $('pending-section').hidden = !res.registrations.length;
  $('upcoming-section').hidden = false;
  $('past-section').hidden = !res.past.length;
  $('loading').hidden = true;
}

load();
