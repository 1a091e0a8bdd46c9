// r-calendar.js: month grids for the rentals pages (the guest's
// availability calendar in b-property.js, the owner's calendar of bookings
// in owner.js).  Dates are 'YYYY-MM-DD' strings handled in UTC, so a
// browser's time zone never shifts a day.
//
//   monthTable(2027, 0, (iso, td) => { ... })   a <table> for January 2027;
//                                               fill(iso, td) fills each day
//   gridKeys(container)   arrow keys move between the day buttons
//                         (button[data-date]) inside container

import { el } from '/js/api.js';

export const iso = (d) => d.toISOString().slice(0, 10);
export const parse = (s) => new Date(`${s}T00:00:00Z`);
export const addDays = (s, n) => {
  const d = parse(s);
  d.setUTCDate(d.getUTCDate() + n);
  return iso(d);
};
export const monthStart = (y, m) => iso(new Date(Date.UTC(y, m, 1)));
export const today = () => {
  const n = new Date();
  return iso(new Date(Date.UTC(n.getFullYear(), n.getMonth(), n.getDate())));
};

const WEEKDAYS = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];

export function monthName(y, m) {
  return new Date(Date.UTC(y, m, 1)).toLocaleDateString('en-GB',
    { month: 'long', year: 'numeric', timeZone: 'UTC' });
}

export function longDate(s) {
  return parse(s).toLocaleDateString('en-GB', { weekday: 'long', day: 'numeric',
    month: 'long', year: 'numeric', timeZone: 'UTC' });
}

export function monthTable(y, m, fill) {
  const first = new Date(Date.UTC(y, m, 1));
  const days = new Date(Date.UTC(y, m + 1, 0)).getUTCDate();
  const lead = (first.getUTCDay() + 6) % 7;      // Monday first
  const rows = [];
  let cells = [];
  for (let i = 0; i < lead; i++) cells.push(el('td', { class: 'pad' }));
  for (let d = 1; d <= days; d++) {
    const s = iso(new Date(Date.UTC(y, m, d)));
    const td = el('td', { 'data-date': s });
    fill(s, td);
    cells.push(td);
    if (cells.length === 7) {
      rows.push(el('tr', {}, cells));
      cells = [];
    }
  }
  if (cells.length) {
    while (cells.length < 7) cells.push(el('td', { class: 'pad' }));
    rows.push(el('tr', {}, cells));
  }
  return el('table', { class: 'calendar' },
    el('caption', { text: monthName(y, m) }),
    el('thead', {}, el('tr', {}, WEEKDAYS.map((w) =>
      el('th', { scope: 'col', abbr: w, text: w })))),
    el('tbody', {}, rows));
}

const STEP = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -7, ArrowDown: 7 };

export function gridKeys(container) {
  container.addEventListener('keydown', (e) => {
    const b = e.target.closest && e.target.closest('button[data-date]');
    if (!b || !(e.key in STEP)) return;
    const next = container.querySelector(
      `button[data-date="${addDays(b.dataset.date, STEP[e.key])}"]`);
    if (next) {
      e.preventDefault();
      next.focus();
    }
  });
}
