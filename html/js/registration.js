// registration.js: where a registration stands
// (registration.html?id=N, where the confirmation link and Stripe send
// the participant back).
//
//   GET /api/registrations/{id}   {"status", "message", "event", "ticket_type",
//       "checkout_url", "ticket": {"code", "ics_url"}, "error", ...}
//
//   pending    the address is not confirmed yet: check the mail
//   held       paid ticket, place held: wait for the payment page
//              (checkout_url), then go there; back from Stripe
//              (&session_id=...) wait for the payment to be recorded;
//              (&cancelled=1) offer to go back to the payment page
//   issued     the ticket, its calendar file, my events
//   sold_out, expired, failed, cancelled: the API's sentence
//
// Waiting is bounded (api.js poll) and shows progress.

import { api, el, idParam, param, poll, signinHref } from '/js/api.js';
import { money, range, when, zoneName } from '/js/format.js';

const $ = (id) => document.getElementById(id);

const id = idParam('id');
const returned = /^cs_[A-Za-z0-9_]+$/.test(param('session_id') || '');
const left = param('cancelled') === '1';

function state(text, cls = '') {
  $('state').textContent = text;
  $('state').className = cls;
}

function working(on) {
  $('progress').hidden = !on;
  $('state').setAttribute('aria-busy', on ? 'true' : 'false');
}

function actions(...links) {
  $('actions').replaceChildren(...links.flatMap((l, i) => (i ? [' ', l] : [l])));
  $('actions').hidden = !links.length;
}

function showEvent(r) {
  const e = r.event;
  $('event-link').textContent = e.title;
  $('event-link').href = `/event.html?id=${e.id}`;
  $('event-when').textContent = `${range(e.starts_at, e.ends_at, e.time_zone)}, `
    + zoneName(e.time_zone, new Date(e.starts_at));
  $('event-line').hidden = false;
  document.title = `Registration for ${e.title} \u00b7 Platform`;
}

function eventLink(r, text) {
  return el('a', { href: `/event.html?id=${r.event.id}` }, text);
}

// Shows R; returns true when the page is done (nothing more to wait for).
function render(r) {
  showEvent(r);
  $('ticket').hidden = true;
  actions();

  switch (r.status) {
    case 'issued': {
      working(false);
      state(r.message || 'Your ticket is confirmed.', 'ok');
      $('reg-title').textContent = 'Your ticket';
      $('ticket-type').textContent = `${r.ticket_type.name} (${money(r.amount_minor, r.currency)})`;
      $('ticket-name').textContent = r.name;
      $('ticket-code').textContent = r.ticket ? r.ticket.code : '';
      if (r.ticket) $('ics').href = r.ticket.ics_url;
      $('ics').hidden = !r.ticket;
      $('ticket').hidden = false;
      return true;
    }
    case 'pending':
      working(false);
      state(r.message || 'Check your mail: open the link we sent to confirm '
            + 'your registration.');
      return true;
    case 'held':
      if (left && r.checkout_url) {
        working(false);
        state('You left the payment page before paying. Your place is held '
              + `until ${when(r.hold_expires_at, r.event.time_zone)} `
              + `(${r.event.time_zone}).`);
        actions(el('a', { class: 'button', href: r.checkout_url },
                   `Pay ${money(r.amount_minor, r.currency)}`));
        return true;
      }
      working(true);
      if (returned) {
        state('Payment received, issuing your ticket\u2026');
        return false;
      }
      if (r.checkout_url) {
        state('Taking you to the payment page\u2026');
        location.assign(r.checkout_url);
        return true;
      }
      state('Your place is held. Preparing the payment\u2026');
      return false;
    default: {
      working(false);
      state(r.message || r.error || 'This registration did not go through.', 'bad');
      const again = ['sold_out', 'expired', 'failed'].includes(r.status)
                    && r.event.status === 'published'
                    && new Date(r.event.ends_at) > new Date();
      const bits = [];
      if (r.refunded) bits.push(el('span', {}, 'Your payment is refunded in full.'));
      if (again) bits.push(eventLink(r, 'Back to the event to register again'));
      else bits.push(eventLink(r, 'The event page'));
      actions(...bits);
      return true;
    }
  }
}

async function load() {
  if (!id) {
    state('This page needs the registration number from your email, like '
          + 'registration.html?id=12.', 'bad');
    return;
  }

  let r;
  try {
    r = await api(`/api/registrations/${id}`);
  } catch (err) {
    working(false);
    if (err.status === 401) {
      state('Sign in with the address you registered with to see this '
            + 'registration.');
      actions(el('a', { class: 'button', href: signinHref() }, 'Sign in'));
    } else if (err.status === 404) {
      state('There is no such registration for this account. If you '
            + 'registered with another address, sign in with that one.', 'bad');
      actions(el('a', { href: '/my-events.html' }, 'My events'));
    } else {
      state(err.message, 'bad');
    }
    return;
  }

  if (render(r)) return;

  // Waiting: for the payment page (held, no checkout_url yet), or for the
  // payment to be recorded (back from Stripe).
  try {
    const done = await poll(async () => {
      const x = await api(`/api/registrations/${id}`);
      if (x.status !== 'held') return x;
      if (!returned && x.checkout_url) return x;
      return undefined;
    }, { interval: 700, timeout: returned ? 180000 : 90000 });
    render(done);
  } catch (err) {
    working(false);
    state(err.message, 'bad');
    actions(el('a', { href: location.href }, 'Reload this page'));
  }
}

load();
