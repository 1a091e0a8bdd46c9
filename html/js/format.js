// format.js: dates in an event's time zone, prices, and the fixed lists the
// event pages share (business types, currencies: GET /api/meta, whose
// source is app.business_types() and app.currencies() in SQL).
//
// Times travel as ISO 8601 instants (UTC) and are shown in the event's IANA
// time zone, which is where the event happens; an organiser types a wall
// time in that zone (<input type="datetime-local">) and zonedToUtc() turns
// it into the instant sent to the API.

// ---------------------------------------------------------------- lists

// Digits after the decimal point per currency, as /api/meta said.
const DIGITS = {};
let metaPromise = null;

// GET /api/meta, once per page: {"business_types": ["conference", ...],
// "currencies": [{"code": "EUR", "digits": 2}, ...]}.  Empty lists when it
// cannot be had (the page's own requests then say what is wrong).
export function meta() {
  if (!metaPromise) {
    metaPromise = fetch('/api/meta', { headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
      .then((m) => {
        for (const c of m.currencies) DIGITS[c.code] = c.digits;
        return m;
      })
      .catch(() => ({ business_types: [], currencies: [] }));
  }
  return metaPromise;
}

// "hackathon" -> "Hackathon".
export function businessTypeName(t) {
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

// [["conference", "Conference"], ...] for a <select>.
export async function businessTypes() {
  return (await meta()).business_types.map((t) => [t, businessTypeName(t)]);
}

// The currency codes, in the API's order.
export async function currencies() {
  return (await meta()).currencies.map((c) => c.code);
}

// Digits of CURRENCY's minor unit: the API's (after meta()), else what
// the browser knows of ISO 4217, else 2.
export function currencyDigits(currency) {
  if (currency in DIGITS) return DIGITS[currency];
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency })
      .resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

// 2500, "EUR" -> "€25.00"; 0 -> "Free".
export function money(minor, currency) {
  if (!minor) return 'Free';
  const digits = currencyDigits(currency);
  const major = minor / 10 ** digits;
  try {
    return new Intl.NumberFormat(undefined, {
      style: 'currency', currency, minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(major);
  } catch {
    return `${major.toFixed(digits)} ${currency}`;
  }
}

// "25", "25.5", "25,50" in CURRENCY -> minor units (2550), or null when the
// text is not an amount with at most the currency's digits.
export function toMinor(text, currency) {
  const digits = currencyDigits(currency);
  const t = String(text).trim().replace(',', '.');
  const m = /^(\d{1,9})(?:\.(\d*))?$/.exec(t);
  if (!m || (m[2] || '').length > digits) return null;
  const frac = (m[2] || '').padEnd(digits, '0');
  const v = Number(m[1]) * 10 ** digits + Number(frac || 0);
  return Number.isSafeInteger(v) && v <= 2147483647 ? v : null;
}

// Minor units -> the text for an amount input ("25.50").
export function fromMinor(minor, currency) {
  const digits = currencyDigits(currency);
  return (minor / 10 ** digits).toFixed(digits);
}

// ---------------------------------------------------------------- time zones

// The IANA zones this browser knows, UTC first.
export function timeZones() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf('timeZone');
  } catch {
    zones = ['Europe/London', 'Europe/Paris', 'America/New_York'];
  }
  return ['UTC', ...zones.filter((z) => z !== 'UTC')];
}

// The person's own zone.
export function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function parts(date, tz) {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit',
    day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
  const o = {};
  for (const p of f.formatToParts(date)) o[p.type] = p.value;
  return o;
}

// Minutes TZ is ahead of UTC at DATE.
function offsetAt(date, tz) {
  const p = parts(date, tz);
  const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24,
                         +p.minute, +p.second);
  return Math.round((asUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
}

// "2031-03-10T10:00" in "Europe/Paris" -> "2031-03-10T09:00:00.000Z", or
// null for an empty or malformed value.  A wall time skipped by a clock
// change moves forward with the clock.
export function zonedToUtc(local, tz) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(local || '');
  if (!m) return null;
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
  let t = wall - offsetAt(new Date(wall), tz) * 60000;
  t = wall - offsetAt(new Date(t), tz) * 60000;
  return new Date(t).toISOString();
}

// An instant -> "2031-03-10T10:00" in TZ (a datetime-local value).
export function utcToZoned(iso, tz) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = parts(d, tz);
  return `${p.year}-${p.month}-${p.day}T${String(+p.hour % 24).padStart(2, '0')}:${p.minute}`;
}

// ---------------------------------------------------------------- showing

const DAY = { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' };
const TIME = { hour: 'numeric', minute: '2-digit' };

function fmt(d, tz, opts) {
  return new Intl.DateTimeFormat(undefined, { timeZone: tz, ...opts }).format(d);
}

// An instant in TZ: "Mon, 10 Mar 2031, 10:00".
export function when(iso, tz = undefined) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return fmt(d, tz, { ...DAY, ...TIME });
}

// The day only: "Mon, 10 Mar 2031".
export function day(iso, tz = undefined) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : fmt(d, tz, DAY);
}

// From START to END in TZ, the day said once when it is the same:
// "Mon, 10 Mar 2031, 10:00 – 18:00" or "... 10:00 – Tue, 11 Mar 2031, 18:00".
export function range(start, end, tz) {
  const a = new Date(start);
  const b = new Date(end);
  if (Number.isNaN(a.getTime()) || Number.isNaN(b.getTime())) return '';
  const sameDay = fmt(a, tz, DAY) === fmt(b, tz, DAY);
  return `${fmt(a, tz, { ...DAY, ...TIME })} \u2013 `
         + (sameDay ? fmt(b, tz, TIME) : fmt(b, tz, { ...DAY, ...TIME }));
}

// "Europe/Paris" -> "Europe/Paris time, GMT+1".
export function zoneName(tz, at = new Date()) {
  try {
    const p = new Intl.DateTimeFormat(undefined, {
      timeZone: tz, timeZoneName: 'short',
    }).formatToParts(at).find((x) => x.type === 'timeZoneName');
    return p && p.value !== tz ? `${tz} time, ${p.value}` : `${tz} time`;
  } catch {
    return tz;
  }
}
