// org-event.js: the organiser's event editor
// (organiser/event.html?org=N for a new event, ?org=N&id=M for one).
//
//   POST  /api/orgs/{org}/events                       a draft
//   GET   /api/orgs/{org}/events/{id}                  the event, its ticket
//                                                      types (sold, quantity)
//   PATCH /api/orgs/{org}/events/{id}                  the fields of the form
//   POST  /api/orgs/{org}/events/{id}/publish          400 names the field
//   PUT, DELETE /api/orgs/{org}/events/{id}/cover      the cover image (the
//                                                      file is the body)
//   POST, PATCH, DELETE .../ticket-types[/{tt}]        ticket types
//   GET   .../registrations                            who registered
//   POST  .../cancel                                   cancel the event
//   teams.js: the teams and submissions sections
//
// Times: the form holds wall times in the event's time zone
// (datetime-local); the API gets instants (format.js zonedToUtc).

import { api, say, el, clearErrors, showError, fieldError, idParam,
         signedIn, signinHref, busy } from '/js/api.js';
import { businessTypes, currencies, currencyDigits, money, toMinor, fromMinor,
         timeZones,
         localZone, zonedToUtc, utcToZoned, when, zoneName }
  from '/js/format.js';
import { initTeams } from '/js/org-teams.js';

const $ = (id) => document.getElementById(id);

const editor = $('editor');
const ttForm = $('tt-form');

let org = idParam('org');
let id = idParam('id');
let event = null;
let dirty = false;
let editing = null;     // the ticket type being changed, or null

const STATUS = { draft: 'Draft', published: 'Published', cancelled: 'Cancelled' };

// ---------------------------------------------------------------- the form

// The lists come from GET /api/meta (business types, currencies).
for (const [value, name] of await businessTypes()) {
  $('business_type').append(el('option', { value }, name));
}
$('time_zone').append(...timeZones().map((z) => el('option', { value: z }, z)));
$('tt-currency').append(...(await currencies()).map((c) =>
  el('option', { value: c }, c)));

function zone() {
  return $('time_zone').value || 'UTC';
}

function showTimesHelp() {
  $('times-help').textContent = `Times are in the event's time zone, `
    + `${zoneName(zone())}.`;
}

function fillEditor(e) {
  $('title').value = e.title;
  $('description').value = e.description || '';
  $('business_type').value = e.business_type;
  if (![...$('time_zone').options].some((o) => o.value === e.time_zone)) {
    $('time_zone').append(el('option', { value: e.time_zone }, e.time_zone));
  }
  $('time_zone').value = e.time_zone;
  $('starts_at').value = utcToZoned(e.starts_at, e.time_zone);
  $('ends_at').value = utcToZoned(e.ends_at, e.time_zone);
  $('capacity').value = e.capacity ?? '';
  // an uploaded cover (/media/...) is shown below, not as an address
  $('cover_url').value = uploaded(e) ? '' : (e.cover_url || '');
  $('main_stage').checked = !!e.main_stage;
  $('breakouts').checked = !!e.breakouts;
  $('team_size').value = e.team_size ?? '';
  showTimesHelp();
  dirty = false;
}

function optionalInt(input) {
  const v = input.value.trim();
  return v === '' ? null : Number(v);
}

// The body for POST/PATCH, or null after marking what is missing.
function readEditor() {
  const tz = zone();
  const missing = [
    ['title', !$('title').value.trim(), 'Please give the event a title.'],
    ['business_type', !$('business_type').value, 'Please choose the type of event.'],
    ['starts_at', !$('starts_at').value, 'Please enter when the event starts.'],
    ['ends_at', !$('ends_at').value, 'Please enter when the event ends.'],
    ['capacity', !$('capacity').validity.valid,
     'The capacity is a whole number of people (or leave it empty).'],
    ['team_size', !$('team_size').validity.valid,
     'The team size is a whole number of people (or leave it empty).'],
    ['cover_url', !$('cover_url').validity.valid,
     'The cover image address starts with https:// (or leave it empty).'],
  ].filter(([, bad]) => bad);
  missing.forEach(([name, , text], i) => fieldError(editor, name, text, { focus: i === 0 }));
  if (missing.length) return null;

  const cover = $('cover_url').value.trim();
  const keep = !cover && uploaded(event);   // the uploaded cover stays
  const body = {
    title: $('title').value.trim(),
    description: $('description').value,
    business_type: $('business_type').value,
    time_zone: tz,
    starts_at: zonedToUtc($('starts_at').value, tz),
    ends_at: zonedToUtc($('ends_at').value, tz),
    capacity: optionalInt($('capacity')),
    cover_url: cover || null,
    main_stage: $('main_stage').checked,
    breakouts: $('breakouts').checked,
    team_size: optionalInt($('team_size')),
  };
  if (keep) delete body.cover_url;
  return body;
}

// Saves the editor; true when saved.
async function save() {
  const message = $('editor-message');
  clearErrors(editor);
  const body = readEditor();
  if (!body) {
    say(message, 'Please correct the fields marked above.', 'bad');
    return false;
  }
  say(message, id ? 'Saving\u2026' : 'Creating the draft\u2026');
  try {
    if (id) {
      event = await api(`/api/orgs/${org}/events/${id}`, { method: 'PATCH', body });
      say(message, 'Saved.', 'ok');
    } else {
      if (body.cover_url === null) delete body.cover_url;
      event = await api(`/api/orgs/${org}/events`, { method: 'POST', body });
      id = String(event.id);
      history.replaceState(null, '', `/organiser/event.html?org=${org}&id=${id}`);
      say(message, 'The draft is saved. Add its ticket types below, then publish it.',
          'ok');
    }
    dirty = false;
    render();
    return true;
  } catch (err) {
    showError(err, { form: editor, message });
    return false;
  }
}

// the cover file is saved on its own (uploadCover)
const edited = (ev) => { if (ev.target.id !== 'cover_file') dirty = true; };
editor.addEventListener('input', edited);
editor.addEventListener('change', edited);
$('time_zone').addEventListener('change', showTimesHelp);

editor.addEventListener('submit', (ev) => {
  ev.preventDefault();
  busy($('save'), id ? 'Saving\u2026' : 'Creating\u2026', save);
});

// ---------------------------------------------------------------- cover

function uploaded(e) {
  return !!(e && e.cover_url && e.cover_url.startsWith('/media/'));
}

// The upload area (once the event exists), with the 320-pixel thumbnail.
function showCover() {
  $('cover-upload').hidden = !event;
  const up = uploaded(event);
  $('cover_preview').hidden = !up;
  $('cover_remove').hidden = !up;
  if (up) {
    $('cover_preview').src = `/media/w320/${event.cover_url.slice(7)}`;
  } else {
    $('cover_preview').removeAttribute('src');
  }
}

async function coverRequest(method, body) {
  let res;
  try {
    res = await fetch(`/api/orgs/${org}/events/${id}/cover`,
      { method, body, credentials: 'same-origin',
        headers: { Accept: 'application/json' } });
  } catch {
    throw new Error('The server could not be reached. Try again.');
  }
  const data = await res.json().catch(() => null);
  if (res.status === 415) throw new Error('Please choose a JPEG, PNG or WebP image.');
  if (res.status === 413) throw new Error('The image is larger than 5 MB.');
  if (!res.ok) {
    throw new Error((data && data.error && data.error.message)
                    || `The cover could not be saved (${res.status}).`);
  }
  return data;
}

async function uploadCover() {
  const input = $('cover_file');
  const file = input.files[0];
  const message = $('cover-message');
  if (!file || !id) return;
  if (file.size > 5 * 1024 * 1024) {
    say(message, 'The image is larger than 5 MB.', 'bad');
    input.value = '';
    return;
  }
  say(message, 'Uploading the cover\u2026');
  try {
    event = await coverRequest('PUT', file);
    $('cover_url').value = '';
    showCover();
    say(message, 'The cover is saved.', 'ok');
  } catch (err) {
    say(message, err.message, 'bad');
  }
  input.value = '';
}

$('cover_file').addEventListener('change', uploadCover);
$('cover_remove').addEventListener('click', () => busy($('cover_remove'),
  'Removing\u2026', async () => {
    try {
      event = await coverRequest('DELETE');
      showCover();
      say($('cover-message'), 'The cover is removed.', 'ok');
    } catch (err) {
      say($('cover-message'), err.message, 'bad');
    }
  }));

// ---------------------------------------------------------------- status

function render() {
  const e = event;
  document.title = `${e ? e.title : 'New event'} \u00b7 Platform`;
  $('heading').textContent = e ? e.title : 'New event';
  $('save').textContent = e ? 'Save the changes' : 'Create the draft';
  const status = e ? e.status : 'draft';
  $('status').textContent = STATUS[status] || status;
  $('status').className = `badge status-${status}`;
  $('publish-area').hidden = !e || status !== 'draft';
  $('public-link').hidden = !e || status === 'draft';
  if (e) $('public-link').href = `/event.html?id=${e.id}`;
  $('room-link').hidden = !e || status === 'draft';
  if (e) $('room-link').href = `/organiser/room.html?event=${e.id}`;
  // A cancelled event cannot be changed any more.
  const closed = status === 'cancelled';
  for (const f of [editor, ttForm]) {
    for (const x of f.elements) x.disabled = closed;
  }
  if (closed) say($('editor-message'), 'This event is cancelled: it can no longer be changed.');
  showCover();
  $('tickets-section').hidden = !e;
  if (e) renderTicketTypes();
  for (const s of ['registrations-section', 'danger-section']) {
    $(s).hidden = !e || status === 'draft';
  }
  $('danger-section').hidden = !e || status === 'draft';
  $('cancel-event').hidden = status !== 'published';
  if (closed) {
    $('danger-title').textContent = 'Cancelled';
    $('cancel-help').textContent = 'This event is cancelled: registration is '
      + 'closed, its tickets are cancelled and their holders were emailed.';
  }
  if (e && status !== 'draft') loadRegistrations();
  if (e) initTeams({ org, event: e });
}

$('publish').addEventListener('click', () => busy($('publish'), 'Publishing\u2026',
  async () => {
    const message = $('publish-message');
    clearErrors(document);
    if (dirty && !(await save())) {
      say(message, 'Save the details first: see the fields marked.', 'bad');
      return;
    }
    say(message, 'Checking and publishing\u2026');
    try {
      event = await api(`/api/orgs/${org}/events/${id}/publish`, { method: 'POST' });
      say(message, 'Published: the event is listed for everyone.', 'ok');
      say($('editor-message'), '');
      render();
    } catch (err) {
      showError(err, { form: editor, message });
      if (err.field === 'stripe_account') {
        $('publish-message').append(' ', el('a',
          { href: `/organiser/?org=${org}#stripe-section` },
          'Set the Stripe account'), '.');
      }
    }
  }));

// ---------------------------------------------------------------- tickets

function salesWindow(t) {
  const tz = event.time_zone;
  if (t.sales_start && t.sales_end) {
    return `${when(t.sales_start, tz)} to ${when(t.sales_end, tz)}`;
  }
  if (t.sales_start) return `From ${when(t.sales_start, tz)}`;
  if (t.sales_end) return `Until ${when(t.sales_end, tz)}`;
  return 'Until the event ends';
}

function renderTicketTypes() {
  const rows = event.ticket_types.map((t) => {
    const edit = el('button', { type: 'button', class: 'small secondary',
                                'aria-label': `Change ${t.name}` }, 'Change');
    edit.addEventListener('click', () => startEdit(t));
    const del = el('button', { type: 'button', class: 'small danger',
                               'aria-label': `Delete ${t.name}` }, 'Delete');
    del.addEventListener('click', () => deleteTicketType(t, del));
    return el('tr', {},
      el('th', { scope: 'row' }, t.name),
      el('td', {}, money(t.price_minor, t.currency)),
      el('td', {}, `${t.sold} of ${t.quantity} taken`),
      el('td', {}, salesWindow(t)),
      event.status === 'cancelled' ? el('td')
        : el('td', { class: 'actions' }, edit, ' ', t.sold ? null : del));
  });
  $('ticket-types').replaceChildren(...(rows.length ? rows
    : [el('tr', {}, el('td', { colSpan: 5, class: 'muted' },
                       'No ticket types yet: add at least one to publish.'))]));
}

function resetTicketForm() {
  editing = null;
  ttForm.reset();
  clearErrors(ttForm);
  $('tt-currency').value = 'EUR';
  $('tt-form-title').textContent = 'Add a ticket type';
  $('tt-submit').textContent = 'Add the ticket type';
  $('tt-cancel').hidden = true;
}

function startEdit(t) {
  resetTicketForm();
  editing = t;
  const tz = event.time_zone;
  $('tt-name').value = t.name;
  $('tt-currency').value = t.currency || 'EUR';
  $('tt-price').value = t.price_minor ? fromMinor(t.price_minor, t.currency) : '0';
  $('tt-quantity').value = t.quantity;
  $('tt-sales-start').value = utcToZoned(t.sales_start, tz);
  $('tt-sales-end').value = utcToZoned(t.sales_end, tz);
  $('tt-form-title').textContent = `Change \u201c${t.name}\u201d`;
  $('tt-submit').textContent = 'Save the ticket type';
  $('tt-cancel').hidden = false;
  $('tt-name').focus();
}

$('tt-cancel').addEventListener('click', () => {
  resetTicketForm();
  say($('tt-message'), '');
});

function readTicketForm() {
  const currency = $('tt-currency').value;
  const priceText = $('tt-price').value.trim() || '0';
  const price = toMinor(priceText, currency);
  const qty = $('tt-quantity').value.trim();
  const digits = currencyDigits(currency);
  const bad = [
    ['name', !$('tt-name').value.trim(), 'Please name the ticket type.'],
    ['price_minor', price === null,
     digits ? `The price is an amount like 25 or 25.50 (${currency}); 0 for free.`
            : `The price is a whole amount in ${currency}; 0 for free.`],
    ['quantity', !/^[1-9][0-9]{0,8}$/.test(qty),
     'Please enter how many places there are (at least 1).'],
  ].filter(([, b]) => b);
  bad.forEach(([name, , text], i) => fieldError(ttForm, name, text, { focus: i === 0 }));
  if (bad.length) return null;

  const tz = event.time_zone;
  return {
    name: $('tt-name').value.trim(),
    price_minor: price,
    currency: price > 0 ? currency : null,
    quantity: Number(qty),
    sales_start: zonedToUtc($('tt-sales-start').value, tz),
    sales_end: zonedToUtc($('tt-sales-end').value, tz),
  };
}

ttForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const message = $('tt-message');
  clearErrors(ttForm);
  const body = readTicketForm();
  if (!body) {
    say(message, 'Please correct the fields marked above.', 'bad');
    return;
  }
  busy($('tt-submit'), 'Saving\u2026', async () => {
    try {
      const base = `/api/orgs/${org}/events/${id}/ticket-types`;
      if (editing) {
        await api(`${base}/${editing.id}`, { method: 'PATCH', body });
        say(message, `${body.name} is saved.`, 'ok');
      } else {
        await api(base, { method: 'POST', body });
        say(message, `${body.name} is added (${money(body.price_minor, body.currency)}, `
            + `${body.quantity} places).`, 'ok');
      }
      resetTicketForm();
      await reload();
    } catch (err) {
      showError(err, { form: ttForm, message });
    }
  });
});

async function deleteTicketType(t, button) {
  const message = $('tt-message');
  if (button.dataset.confirm !== 'yes') {
    button.dataset.confirm = 'yes';
    button.textContent = 'Really delete?';
    setTimeout(() => {
      if (button.isConnected) {
        button.dataset.confirm = '';
        button.textContent = 'Delete';
      }
    }, 5000);
    return;
  }
  button.disabled = true;
  say(message, `Deleting ${t.name}\u2026`);
  try {
    await api(`/api/orgs/${org}/events/${id}/ticket-types/${t.id}`, { method: 'DELETE' });
    say(message, `${t.name} is deleted.`, 'ok');
    if (editing && editing.id === t.id) resetTicketForm();
    await reload();
  } catch (err) {
    say(message, err.message, 'bad');
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- registrations

const REG_STATUS = {
  pending: 'Email not confirmed yet',
  held: 'Paying',
  issued: 'Ticket issued',
  sold_out: 'Sold out',
  expired: 'Expired',
  failed: 'Payment failed',
  cancelled: 'Cancelled',
};

async function loadRegistrations() {
  const message = $('registrations-message');
  say(message, 'Loading the registrations\u2026');
  try {
    const res = await api(`/api/orgs/${org}/events/${id}/registrations`);
    const list = res.registrations;
    const tt = new Map(res.ticket_types.map((t) => [t.id, t.name]));
    $('registrations').replaceChildren(...(list.length ? list.map((r) => el('tr', {},
      el('td', {}, r.name),
      el('td', {}, r.email),
      el('td', {}, `${tt.get(r.ticket_type_id) || ''} (${money(r.amount_minor, r.currency)})`),
      el('td', {}, REG_STATUS[r.status] || r.status),
      el('td', {}, when(r.created_at, event.time_zone))))
      : [el('tr', {}, el('td', { colSpan: 5, class: 'muted' }, 'Nobody has registered yet.'))]));
    const issued = list.filter((r) => r.status === 'issued').length;
    $('registrations-summary').textContent = `${issued} ${issued === 1 ? 'ticket' : 'tickets'} issued, `
      + `${list.length} ${list.length === 1 ? 'registration' : 'registrations'} in all.`;
    say(message, '');
  } catch (err) {
    say(message, err.message, 'bad');
  }
}

$('cancel-event').addEventListener('click', () => {
  const button = $('cancel-event');
  const message = $('cancel-message');
  if (button.dataset.confirm !== 'yes') {
    button.dataset.confirm = 'yes';
    button.textContent = 'Yes, cancel the event for everyone';
    say(message, 'Press again to confirm. This cannot be undone.');
    return;
  }
  busy(button, 'Cancelling\u2026', async () => {
    try {
      const r = await api(`/api/orgs/${org}/events/${id}/cancel`, { method: 'POST' });
      event = r.event;
      const n = r.tickets_cancelled;
      say(message, `The event is cancelled: ${n} ${n === 1 ? 'ticket' : 'tickets'} `
          + `cancelled and their holders emailed${r.refunds ? `, ${r.refunds} `
          + `${r.refunds === 1 ? 'payment' : 'payments'} refunded` : ''}.`, 'ok');
      render();
    } catch (err) {
      say(message, err.message, 'bad');
    }
  });
});

// ---------------------------------------------------------------- loading

async function reload() {
  event = await api(`/api/orgs/${org}/events/${id}`);
  render();
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
    $('signin-link').href = signinHref();
    $('loading').hidden = true;
    $('signed-out').hidden = false;
    return;
  }
  const orgs = me.memberships.filter((m) => m.role === 'organiser').map((m) => String(m.org_id));
  if (!org) org = orgs[0] || null;
  if (!org || !orgs.includes(org)) {
    $('loading').textContent = 'You are not an organiser of this organisation. ';
    $('loading').className = 'bad';
    $('loading').append(el('a', { href: '/organiser/' }, 'Your organisations'), '.');
    return;
  }
  for (const a of [$('back'), $('footer-org'), $('nav-org')]) a.href = `/organiser/?org=${org}`;

  if (id) {
    try {
      event = await api(`/api/orgs/${org}/events/${id}`);
    } catch (err) {
      $('loading').textContent = err.status === 404
        ? 'There is no such event in this organisation.' : err.message;
      $('loading').className = 'bad';
      return;
    }
    if (!event) {
      $('loading').textContent = 'There is no such event in this organisation.';
      $('loading').className = 'bad';
      return;
    }
    fillEditor(event);
  } else {
    $('time_zone').value = localZone();
    if (!$('time_zone').value) $('time_zone').value = 'UTC';
    showTimesHelp();
  }
  resetTicketForm();
  $('loading').hidden = true;
  $('status-section').hidden = false;
  $('editor-section').hidden = false;
  render();
}

window.addEventListener('beforeunload', (ev) => {
  if (dirty) ev.preventDefault();
});

load();
