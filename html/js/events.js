// events.js: the public list of upcoming events (events.html).
//
//   GET /api/events?limit&after&type&from&to&q   {"items": [...], "next"}
//   GET /api/meta                                 the business types
//
// The filters live in the page's address (events.html?type=hackathon&q=x),
// so a search can be bookmarked and the back button returns to it.  "More
// events" asks for the next page with the cursor the last answer gave.

import { api, say, el, clearErrors, showError, fieldError, busy }
  from '/js/api.js';
import { businessTypes, businessTypeName, range, zoneName } from '/js/format.js';

const $ = (id) => document.getElementById(id);
const PAGE = 10;

const form = $('filters');
const results = $('results');
const more = $('more');
const message = $('message');
const count = $('count');

let next = null;
let shown = 0;
let loading = null;

const BUSINESS_TYPES = await businessTypes();
for (const [value, name] of BUSINESS_TYPES) {
  $('type').append(el('option', { value }, name));
}

function filtersFromAddress() {
  const p = new URLSearchParams(location.search);
  const f = {};
  for (const k of ['q', 'type', 'from', 'to']) {
    const v = (p.get(k) || '').trim();
    if (v) f[k] = v;
  }
  if (f.type && !BUSINESS_TYPES.some(([k]) => k === f.type)) delete f.type;
  for (const k of ['from', 'to']) {
    if (f[k] && !/^\d{4}-\d{2}-\d{2}$/.test(f[k])) delete f[k];
  }
  return f;
}

function filtersFromForm() {
  const f = {};
  for (const k of ['q', 'type', 'from', 'to']) {
    const v = form.elements[k].value.trim();
    if (v) f[k] = v;
  }
  return f;
}

function fill(f) {
  for (const k of ['q', 'type', 'from', 'to']) form.elements[k].value = f[k] || '';
}

function query(f, after) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) p.set(k, v);
  p.set('limit', String(PAGE));
  if (after) p.set('after', after);
  return p;
}

function card(e) {
  const href = `/event.html?id=${encodeURIComponent(e.id)}`;
  return el('li', { class: 'card' },
    el('h3', {}, el('a', { href }, e.title)),
    el('p', { class: 'when' }, range(e.starts_at, e.ends_at, e.time_zone)),
    el('p', { class: 'muted' },
      el('span', { class: 'badge' }, businessTypeName(e.business_type)),
      ` ${zoneName(e.time_zone, new Date(e.starts_at))}`));
}

// "Hackathon, title contains “Rust”, from 2031-03-01".
function describe(f) {
  const bits = [];
  if (f.type) bits.push(businessTypeName(f.type));
  if (f.q) bits.push(`title contains \u201c${f.q}\u201d`);
  if (f.from && f.to) bits.push(`${f.from} to ${f.to}`);
  else if (f.from) bits.push(`from ${f.from}`);
  else if (f.to) bits.push(`until ${f.to}`);
  return bits.join(', ');
}

async function load(f, { append = false } = {}) {
  if (loading) loading.abort();
  const ctl = new AbortController();
  loading = ctl;

  say(message, append ? 'Loading more events\u2026' : 'Looking for events\u2026');
  results.setAttribute('aria-busy', 'true');
  try {
    const page = await api(`/api/events?${query(f, append ? next : null)}`,
                           { signal: ctl.signal });
    if (!append) {
      results.replaceChildren();
      shown = 0;
    }
    results.append(...page.items.map(card));
    shown += page.items.length;
    next = page.next || null;
    more.hidden = !next;
    say(message, '');

    const what = describe(f);
    if (!shown) {
      count.textContent = what ? 'No upcoming events match your search.'
                               : 'No upcoming events yet.';
    } else {
      const n = `${shown}${next ? '+' : ''}`;
      count.textContent = `${n} upcoming ${shown === 1 && !next ? 'event' : 'events'}`
                          + `${what ? `: ${what}` : ''}.`;
    }
  } catch (err) {
    if (err.name === 'AbortError') return;
    showError(err, { form, message });
  } finally {
    if (loading === ctl) {
      loading = null;
      results.removeAttribute('aria-busy');
    }
  }
}

function validate(f) {
  if (f.from && f.to && f.to < f.from) {
    fieldError(form, 'to', 'The end date is before the start date.');
    return false;
  }
  return true;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearErrors(form);
  const f = filtersFromForm();
  if (!validate(f)) return;
  const p = new URLSearchParams(f);
  const url = `${location.pathname}${[...p].length ? `?${p}` : ''}`;
  if (url !== location.pathname + location.search) history.pushState(null, '', url);
  await busy($('search'), 'Searching\u2026', () => load(f));
});

form.addEventListener('reset', () => {
  clearErrors(form);
  // After the browser has emptied the fields.
  setTimeout(() => {
    if (location.search) history.pushState(null, '', location.pathname);
    load({});
  });
});

// Filtering by type applies at once.
$('type').addEventListener('change', () => form.requestSubmit());

more.addEventListener('click', () =>
  busy(more, 'Loading\u2026', () => load(filtersFromAddress(), { append: true })));

window.addEventListener('popstate', () => {
  const f = filtersFromAddress();
  fill(f);
  clearErrors(form);
  load(f);
});

const initial = filtersFromAddress();
fill(initial);
load(initial);
