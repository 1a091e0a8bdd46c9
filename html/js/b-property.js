// b-property.js: /b/{slug}/property.html?id=N: photos, taken dates, a
// price quote and the booking form (a magic link to the guest, then
// Stripe Checkout from the booking page).

import { api, el, say, idParam, busy, showError, clearErrors } from '/js/api.js';
import { money } from '/js/format.js';
import { base, showBusiness } from '/js/b-common.js';

const id = idParam('id');
const form = document.getElementById('book');
const message = document.getElementById('message');
const price = document.getElementById('price');

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
