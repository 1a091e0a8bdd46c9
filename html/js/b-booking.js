// b-booking.js: /b/{slug}/booking.html?id=N: where a booking stands.
// Held and paid for: waits for the Checkout Session and offers the
// payment; back from Stripe: waits for the webhook's confirmation.

import { api, say, idParam, poll, signinHref } from '/js/api.js';
import { money } from '/js/format.js';
import { showBusiness } from '/js/b-common.js';

const id = idParam('id');
const message = document.getElementById('message');
const summary = document.getElementById('summary');
const pay = document.getElementById('pay');

function show(b) {
  showBusiness(b.business);
  summary.textContent = `${b.property.name}: ${b.check_in} \u2192 ${b.check_out}`
    + ` (${b.nights} nights, ${b.guests} guest(s)), `
    + money(b.amount_minor, b.currency);
  say(message, b.message, b.status === 'confirmed' ? 'ok'
                          : /cancelled|expired/.test(b.status) ? 'bad' : '');
  pay.hidden = !(b.status === 'held' && b.checkout_url);
  if (b.checkout_url) pay.href = b.checkout_url;
}

async function load() {
  if (!id) {
    say(message, 'This page needs a booking number.', 'bad');
    return;
  }
  try {
    let b = await api(`/api/bookings/${id}`);
    show(b);
    const back = new URLSearchParams(location.search).has('session_id');
    if (b.status === 'held') {
      b = await poll(async () => {
        const x = await api(`/api/bookings/${id}`);
        show(x);
        if (x.status !== 'held') return x;
        if (x.checkout_url && !back) return x;
        return undefined;
      }, { timeout: 600000 });
      if (b.status === 'held' && b.checkout_url && !back) {
        location.assign(b.checkout_url);
      }
    }
  } catch (err) {
    if (err.status === 401) {
      say(message, 'Open the link we emailed you to see this booking.', 'bad');
      message.append(' ', Object.assign(document.createElement('a'),
        { href: signinHref(), textContent: 'Sign in' }));
    } else {
      say(message, err.message, 'bad');
    }
  }
}

load();
