// b-property.js: /b/{slug}/property.html?id=N: photos, an availability
// calendar (two months; clicking an arrival then a departure day fills the
// form and asks for the price), a price quote and the booking form (a
// magic link to the guest, then Stripe Checkout from the booking page).

import { api, el, say, idParam, busy, showError, clearErrors } from '/js/api.js';
import { money } from '/js/format.js';
import { base, showBusiness } from '/js/b-common.js';
import { monthTable, gridKeys, addDays, monthStart, today, longDate }
  from '/js/r-calendar.js';

const id = idParam('id');
const form = document.getElementById('book');
const message = document.getElementById('message');
const price = document.getElementById('price');

// ------------------------------------------------------------ calendar

const months = document.getElementById('months');
const pick = document.getElementById('cal-pick');
const now = new Date();
const cal = { y: now.getFullYear(), m: now.getMonth(), taken: new Set(),
              in: null, out: null };

// The nights [check_in, check_out) of each stay are taken.
function addTaken(booked) {
  for (const b of booked) {
    for (let d = b.check_in; d < b.check_out; d = addDays(d, 1)) cal.taken.add(d);
  }
}

function freeNights(from, to) {
  for (let d = from; d < to; d = addDays(d, 1)) {
    if (cal.taken.has(d)) return false;
  }
  return true;
}

function dayCell(d, td) {
  const first = today();
  const past = d < first;
  const taken = cal.taken.has(d);
  const sel = d === cal.in ? 'arrival' : d === cal.out ? 'departure' : '';
  if (past) td.classList.add('past');
  if (taken) td.classList.add('taken');
  if (d === cal.in) td.classList.add('check-in');
  if (d === cal.out) td.classList.add('check-out');
  if (cal.in && cal.out && d > cal.in && d < cal.out) td.classList.add('in-stay');
  const label = [longDate(d), past ? 'past' : taken ? 'taken' : 'free', sel]
    .filter(Boolean).join(', ');
  td.append(el('button', { type: 'button', class: 'day', 'data-date': d,
    'aria-label': label, 'aria-pressed': sel ? 'true' : 'false',
    disabled: past, text: String(Number(d.slice(8))),
    onclick: () => choose(d) }));
}

function render(focus) {
  months.replaceChildren(monthTable(cal.y, cal.m, dayCell),
                         monthTable(cal.y, cal.m + 1, dayCell));
  document.getElementById('cal-prev').disabled =
    cal.y === now.getFullYear() && cal.m === now.getMonth();
  if (focus) {
    const b = months.querySelector(`button[data-date="${focus}"]`);
    if (b) b.focus();
  }
}

function choose(d) {
  if (cal.in && !cal.out && d > cal.in) {
    if (freeNights(cal.in, d)) {
      cal.out = d;
      form.check_in.value = cal.in;
      form.check_out.value = cal.out;
      pick.textContent = `${longDate(cal.in)} \u2192 ${longDate(cal.out)}`;
      render(d);
      document.getElementById('quote').click();
      return;
    }
    if (cal.taken.has(d)) {
      pick.textContent = 'Some nights before that day are taken.';
      return;
    }
  }
  if (cal.taken.has(d)) {
    pick.textContent = `${longDate(d)} is taken.`;
    return;
  }
  cal.in = d;
  cal.out = null;
  form.check_in.value = d;
  form.check_out.value = '';
  price.textContent = '';
  pick.textContent = `Arrival ${longDate(d)}: now pick the departure day.`;
  render(d);
}

async function showMonths(step) {
  const d = new Date(Date.UTC(cal.y, cal.m + step, 1));
  cal.y = d.getUTCFullYear();
  cal.m = d.getUTCMonth();
  try {
    const p = await api(`${base}/properties/${id}?from=${monthStart(cal.y, cal.m)}`
                        + `&to=${monthStart(cal.y, cal.m + 2)}`);
    addTaken(p.availability.booked);
  } catch (err) {
    say(message, err.message, 'bad');
  }
  render();
}

document.getElementById('cal-prev').addEventListener('click', () => showMonths(-1));
document.getElementById('cal-next').addEventListener('click', () => showMonths(1));
gridKeys(months);

// Dates typed into the form show on the calendar too.
for (const name of ['check_in', 'check_out']) {
  form[name].addEventListener('change', () => {
    cal.in = form.check_in.value || null;
    cal.out = form.check_out.value || null;
    if (cal.in && cal.out && cal.out <= cal.in) cal.out = null;
    render();
  });
}

// ------------------------------------------------------------ the stay

function stay() {
  const f = new FormData(form);
  return { check_in: f.get('check_in'), check_out: f.get('check_out'),
           guests: Number(f.get('guests')) };
}

async function load() {
  if (!base || !id) {
    say(message, 'This page needs a home from the list.', 'bad');
    return;
  }
  try {
    const p = await api(`${base}/properties/${id}`);
    showBusiness(p.business);
    document.getElementById('name').textContent = p.name;
    document.getElementById('photos').replaceChildren(...p.images.map((i) =>
      el('a', { href: i.url }, el('img', { src: i.thumbnails.w320, alt: '',
                                           loading: 'lazy' }))));
    document.getElementById('description').replaceChildren(
      ...p.description.split(/\n+/).filter(Boolean)
        .map((t) => el('p', { text: t })));
    const facts = [['Sleeps', p.capacity],
                   ['A night', money(p.price_minor, p.currency)],
                   ['Cleaning', money(p.cleaning_fee_minor, p.currency)],
                   ['Minimum stay', `${p.min_nights} night(s)`],
                   ['Check-in', `from ${p.check_in_time}`],
                   ['Check-out', `by ${p.check_out_time}`],
                   ['Address', p.address]];
    document.getElementById('facts').replaceChildren(...facts.flatMap(([k, v]) =>
      [el('dt', { text: k }), el('dd', { text: String(v) })]));
    const booked = p.availability.booked;
    document.getElementById('booked').replaceChildren(...(booked.length
      ? booked.map((b) => el('li', { text: `${b.check_in} \u2192 ${b.check_out}` }))
      : [el('li', { class: 'empty', text: 'Nothing taken in the next months.' })]));
    addTaken(booked);
    render();
  } catch (err) {
    say(message, err.message, 'bad');
  }
}

document.getElementById('quote').addEventListener('click', async (e) => {
  clearErrors(form);
  const s = stay();
  await busy(e.target, 'Pricing\u2026', async () => {
    try {
      const q = await api(`${base}/properties/${id}/quote?check_in=${s.check_in}`
                          + `&check_out=${s.check_out}&guests=${s.guests}`);
      price.textContent = `${q.nights} nights: ${money(q.total_minor, q.currency)}`
        + (q.available ? '' : ' \u2014 these dates are taken');
    } catch (err) {
      price.textContent = '';
      showError(err, { form, message });
    }
  });
});

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  clearErrors(form);
  const f = new FormData(form);
  await busy(document.getElementById('submit'), 'Booking\u2026', async () => {
    try {
      const res = await api(`${base}/properties/${id}/bookings`, {
        method: 'POST',
        body: { ...stay(), name: f.get('name'), email: f.get('email') },
      });
      if (res.link_sent) {
        say(message, `${res.booking.message} We sent the link to `
                     + `${res.booking.guest_email}.`, 'ok');
      } else {
        // Signed in as the address: the payment is on its way.
        location.assign(`booking.html?id=${res.booking.id}`);
      }
    } catch (err) {
      showError(err, { form, message });
    }
  });
});

load();
