// organiser.js: the organiser's home (organiser/index.html?org=N).
//
//   GET  /api/me                        which organisations the person
//                                       organises (memberships)
//   GET  /api/orgs/{org}                its name, saved Stripe account and
//                                       organisers
//   POST /api/orgs                      {"name"}: a new organisation; the
//                                       session cookie comes back with the
//                                       membership
//   GET  /api/orgs/{org}/events         {"current": [...], "past": [...]}
//   PUT  /api/orgs/{org}/stripe         {"account": "acct_..."}
//   POST /api/orgs/{org}/invites        {"email"}: another organiser
//
// Events open in the editor, organiser/event.html?org=N&id=M.

import { api, say, el, clearErrors, showError, fieldError, idParam,
         signedIn, signinHref } from '/js/api.js';
import { range } from '/js/format.js';

const $ = (id) => document.getElementById(id);

let org = null;

const STATUS = {
  draft: 'Draft',
  published: 'Published',
  cancelled: 'Cancelled',
};

function show(...ids) {
  $('loading').hidden = true;
  for (const id of ['signed-out', 'create-org-section', 'org-section',
                    'stripe-section', 'invite-section']) {
    $(id).hidden = !ids.includes(id);
  }
}

function eventRow(e) {
  const href = `/organiser/event.html?org=${org}&id=${e.id}`;
  const sold = e.ticket_types.reduce((n, t) => n + t.sold, 0);
  const total = e.ticket_types.reduce((n, t) => n + t.quantity, 0);
  return el('tr', {},
    el('th', { scope: 'row' }, el('a', { href }, e.title)),
    el('td', {}, range(e.starts_at, e.ends_at, e.time_zone),
       el('br'), el('span', { class: 'muted' }, e.time_zone)),
    el('td', {}, el('span', { class: `badge status-${e.status}` },
                    STATUS[e.status] || e.status)),
    el('td', {}, total ? `${sold} of ${total} taken` : 'No ticket types yet'));
}

function emptyRow(text) {
  return el('tr', {}, el('td', { colSpan: 4, class: 'muted' }, text));
}

async function loadEvents() {
  say($('events-message'), 'Loading the events\u2026');
  try {
    const list = await api(`/api/orgs/${org}/events`);
    $('current').replaceChildren(...(list.current.length
      ? list.current.map(eventRow)
      : [emptyRow('No current events. Create one with \u201cNew event\u201d.')]));
    $('past').replaceChildren(...(list.past.length
      ? list.past.map(eventRow) : [emptyRow('No past events.')]));
    say($('events-message'), '');
  } catch (err) {
    say($('events-message'), err.message, 'bad');
  }
}

function showStripe(account) {
  $('stripe-current').textContent = account
    ? `Paid tickets are paid to ${account}.`
    : 'No Stripe account is saved yet.';
  if (account && !$('account').value) $('account').value = account;
}

// The organisation's name, Stripe account and organisers.
async function loadOrg() {
  try {
    const o = await api(`/api/orgs/${org}`);
    $('org-title').textContent = o.name;
    document.title = `${o.name} \u00b7 Platform`;
    const option = $('org-select').querySelector(`option[value="${o.id}"]`);
    if (option) option.textContent = o.name;
    showStripe(o.stripe_account);
    $('organisers').replaceChildren(...o.organisers.map((p) => el('li', {}, p.email)));
  } catch (err) {
    say($('events-message'), err.message, 'bad');
  }
}

function renderOrg(orgs) {
  $('org-title').textContent = `Organisation ${org}`;
  $('new-event').href = `/organiser/event.html?org=${org}`;
  if (orgs.length > 1) {
    $('org-select').replaceChildren(...orgs.map((o) =>
      el('option', { value: String(o), selected: String(o) === String(org) },
         `Organisation ${o}`)));
    $('org-pick').hidden = false;
  }
  show('org-section', 'stripe-section', 'invite-section');
  loadOrg();
  loadEvents();
}

async function load() {
  let me;
  try {
    me = await signedIn();
  } catch (err) {
    $('loading').textContent = err.message;
    $('loading').className = 'bad';
    return;
  }
  if (!me) {
    $('signin-link').href = signinHref('/organiser/');
    show('signed-out');
    return;
  }

  const orgs = me.memberships.filter((m) => m.role === 'organiser' && m.org_id != null)
    .map((m) => m.org_id);
  if (!orgs.length) {
    show('create-org-section');
    $('org-name').focus();
    return;
  }

  const wanted = idParam('org');
  org = orgs.find((o) => String(o) === wanted) || orgs[0];
  renderOrg(orgs);
}

$('org-select').addEventListener('change', () => {
  location.assign(`/organiser/?org=${encodeURIComponent($('org-select').value)}`);
});

$('create-org').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = $('create-org');
  const message = $('create-org-message');
  clearErrors(form);
  const name = $('org-name').value.trim();
  if (!name) {
    fieldError(form, 'name', 'Please enter the name of your organisation.');
    return;
  }
  const submit = $('create-org-submit');
  submit.disabled = true;
  say(message, 'Creating the organisation\u2026');
  try {
    const o = await api('/api/orgs', { method: 'POST', body: { name } });
    say(message, `${o.name} is created. You are its organiser.`, 'ok');
    // The new session cookie carries the membership.
    history.replaceState(null, '', `/organiser/?org=${o.id}`);
    org = o.id;
    renderOrg([o.id]);
    $('org-title').textContent = o.name;
    $('create-org-section').hidden = false;
    form.hidden = true;
  } catch (err) {
    showError(err, { form, message });
  } finally {
    submit.disabled = false;
  }
});

$('stripe').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = $('stripe');
  const message = $('stripe-message');
  clearErrors(form);
  const account = $('account').value.trim();
  if (!/^acct_[A-Za-z0-9]{1,250}$/.test(account)) {
    fieldError(form, 'account', 'A Stripe account id starts with acct_ '
               + 'followed by letters and digits.');
    return;
  }
  const submit = $('stripe-submit');
  submit.disabled = true;
  say(message, 'Saving\u2026');
  try {
    await api(`/api/orgs/${org}/stripe`, { method: 'PUT', body: { account } });
    say(message, `Saved: paid tickets are paid to ${account}.`, 'ok');
    showStripe(account);
  } catch (err) {
    showError(err, { form, message });
  } finally {
    submit.disabled = false;
  }
});

$('invite').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = $('invite');
  const message = $('invite-message');
  clearErrors(form);
  const input = $('invite-email');
  const email = input.value.trim();
  if (!email || !input.checkValidity()) {
    fieldError(form, 'email', email ? 'This does not look like an email address.'
                                    : 'Please enter their email address.');
    return;
  }
  const submit = $('invite-submit');
  submit.disabled = true;
  say(message, 'Adding\u2026');
  try {
    const r = await api(`/api/orgs/${org}/invites`, { method: 'POST', body: { email } });
    say(message, r.added ? `${r.email} is now an organiser; we emailed them.`
                         : `${r.email} was already an organiser.`, 'ok');
    if (r.added) $('organisers').append(el('li', {}, r.email));
    input.value = '';
  } catch (err) {
    showError(err, { form, message });
  } finally {
    submit.disabled = false;
  }
});

load();
