// owner.js: /owner/ — sign up a business, or run it: owners, homes (with
// photo uploads), bookings to come.  Every call is scoped by the session
// on the server (docs/rentals.md); the page never names a business.

import { api, el, say, busy, showError, clearErrors } from '/js/api.js';
import { money } from '/js/format.js';
import { monthTable, gridKeys, monthStart, longDate }
  from '/js/r-calendar.js';

const $ = (id) => document.getElementById(id);

function formBody(form, numbers = []) {
  const body = {};
  for (const [k, v] of new FormData(form)) {
    if (v === '') continue;
    body[k] = numbers.includes(k) ? Number(v) : v;
  }
  return body;
}

async function upload(propertyId, file, msg) {
  const res = await fetch(`/api/owner/properties/${propertyId}/images`, {
    method: 'POST', credentials: 'same-origin', body: file,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  if (!res.ok) {
    const j = await res.json().catch(() => ({}));
    say(msg, (j.error && j.error.message) || 'The upload failed.', 'bad');
    return false;
  }
  return true;
}

function propertyCard(p) {
  const msg = el('p', { class: 'message', role: 'status' });
  const input = el('input', { type: 'file', accept: 'image/jpeg,image/png,image/webp' });
  input.addEventListener('change', async () => {
    if (input.files[0] && await upload(p.id, input.files[0], msg)) showAll();
  });
  return el('li', { class: 'card' },
    el('h3', { text: p.name }),
    el('p', { text: `${money(p.price_minor, p.currency)} a night, sleeps ${p.capacity}` }),
    el('p', {}, ...p.images.map((i) => el('img', { src: i.thumbnails.w320, alt: '',
                                                  width: 160 }))),
    el('label', {}, 'Add a photo ', input), msg,
    el('p', {}, el('a', { href: `/owner/home.html?id=${p.id}`,
                          text: 'Key codes, calendars, past guests' })));
}

async function showAll() {
  const [b, props, bookings] = await Promise.all([
    api('/api/owner/business'), api('/api/owner/properties'),
    api('/api/owner/bookings')]);
  $('business-name').textContent = b.name;
  $('site-link').href = b.site_url;
  $('site-link').textContent = location.origin + b.site_url;
  $('owners').textContent = b.owners.map((o) => o.email).join(', ');
  $('properties').replaceChildren(...props.properties.map(propertyCard));
  const names = Object.fromEntries(props.properties.map((p) => [p.id, p.name]));
  $('bookings').replaceChildren(...bookings.bookings.map((x) => el('tr', {},
    el('td', { text: `${x.check_in} \u2192 ${x.check_out}` }),
    el('td', { text: names[x.property.id] || x.property.name }),
    el('td', { text: x.kind === 'block' ? 'blocked' : (x.guest_name || '') }),
    el('td', { text: `${x.status} (${x.source})` }))));
  cal.names = names;
  await showCalendar();
  for (const s of ['business-section', 'properties-section', 'bookings-section',
                   'calendar-section']) {
    $(s).hidden = false;
  }
}

// ------------------------------------------------------------ calendar
// One month of every home's bookings and blocks (GET /api/owner/bookings
// ?from&to); a stay shows on each of its nights; clicking one shows it.

const started = new Date();
const cal = { y: started.getFullYear(), m: started.getMonth(), names: {} };

function stayLabel(b) {
  const home = cal.names[b.property.id] || b.property.name || '';
  const who = b.kind === 'block' ? 'blocked' : (b.guest_name || b.guest_email
                                                 || 'guest');
  return `${home}: ${who} (${b.source})`;
}

function showStay(b) {
  const facts = [['Home', cal.names[b.property.id] || b.property.name || ''],
                 ['Status', b.status], ['Source', b.source],
                 ['Kind', b.kind],
                 ['Guest', b.guest_name || ''], ['Email', b.guest_email || ''],
                 ['Guests', b.guests == null ? '' : String(b.guests)],
                 ['Arrival', longDate(b.check_in)],
                 ['Departure', longDate(b.check_out)],
                 ['Nights', String(b.nights ?? '')],
                 ['Note', b.note || '']].filter(([, v]) => v !== '');
  $('cal-detail-title').textContent = stayLabel(b);
  $('cal-detail-facts').replaceChildren(...facts.flatMap(([k, v]) =>
    [el('dt', { text: k }), el('dd', { text: v })]));
  $('cal-detail').hidden = false;
}

async function showCalendar(step = 0) {
  const d = new Date(Date.UTC(cal.y, cal.m + step, 1));
  cal.y = d.getUTCFullYear();
  cal.m = d.getUTCMonth();
  const from = monthStart(cal.y, cal.m);
  const to = monthStart(cal.y, cal.m + 1);
  let list = [];
  try {
    list = (await api(`/api/owner/bookings?from=${from}&to=${to}`)).bookings;
    say($('cal-message'), '');
  } catch (err) {
    say($('cal-message'), err.message, 'bad');
  }
  const table = monthTable(cal.y, cal.m, (day, td) => {
    td.append(el('div', { class: 'num', text: String(Number(day.slice(8))) }));
    for (const b of list) {
      if (b.check_in <= day && day < b.check_out) {
        td.append(el('button', {
          type: 'button', 'data-date': day, 'data-booking': String(b.id),
          class: `stay ${b.kind} ${b.status}`, text: stayLabel(b), title: stayLabel(b),
          'aria-label': `${stayLabel(b)}, ${longDate(day)}`,
          onclick: () => showStay(b) }));
      }
    }
  });
  table.classList.add('owner');
  $('calendar').replaceChildren(table);
}

$('cal-prev').addEventListener('click', () => showCalendar(-1));
$('cal-next').addEventListener('click', () => showCalendar(1));
gridKeys($('calendar'));

$('signup').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  await busy(form.querySelector('button'), 'Sending\u2026', async () => {
    try {
      const res = await api('/api/rentals/signup', { method: 'POST',
                                                     body: formBody(form) });
      if (res.status === 'created') location.reload();
      else say($('signup-message'), 'Check your email for the link.', 'ok');
    } catch (err) {
      showError(err, { form, message: $('signup-message') });
    }
  });
});

$('invite').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  try {
    const res = await api('/api/owner/invites', { method: 'POST',
                                                  body: formBody(form) });
    say($('invite-message'), res.added ? `${res.email} is now an owner.`
                                       : `${res.email} already is.`, 'ok');
    form.reset();
    showAll();
  } catch (err) {
    showError(err, { form, message: $('invite-message') });
  }
});

$('property').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  try {
    await api('/api/owner/properties', { method: 'POST', body: formBody(form,
      ['capacity', 'price_minor', 'min_nights', 'cleaning_minutes']) });
    form.reset();
    say($('property-message'), 'Added.', 'ok');
    showAll();
  } catch (err) {
    showError(err, { form, message: $('property-message') });
  }
});

(async () => {
  try {
    await showAll();
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      $('signup-section').hidden = false;
    } else {
      say($('loading'), err.message, 'bad');
      return;
    }
  }
  $('loading').hidden = true;
})();
