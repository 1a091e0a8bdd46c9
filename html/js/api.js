// api.js: the one module pages use to call the Platform API and to show
// its answers to the person.
//
//   import { api, ApiError } from '/js/api.js';
//   const events = await api('/api/events?limit=10');
//   await api('/api/items', { method: 'POST', body: { title: 'x' } });
//
// Requests and responses are JSON.  Cookies go only to our own origin, and
// a body is always sent as application/json, which a cross-site form cannot
// forge.  Failures throw an ApiError whose message is a sentence that can be
// shown to the person as it is; when the API names the field at fault
// (detail "field: <name>"), err.field is that name and showError() puts the
// sentence next to the field.
//
// Also here, because every page needs them: say() for a status line,
// showError()/clearErrors() for forms, busy() for buttons doing long work,
// poll() for waiting on the server, param() and safePath() for addresses,
// signedIn() for "who is this, if anyone".

export class ApiError extends Error {
  constructor(status, code, message, detail = '', hint = '', body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;   // HTTP status, 0 when the server was not reached
    this.code = code;       // the API's error code (a SQLSTATE), or ''
    this.detail = detail;   // the API's detail, or ''
    this.hint = hint;       // the API's hint, or ''
    const m = /^field: ([A-Za-z0-9_.[\]-]+)/.exec(detail || '');
    this.field = m ? m[1] : null;   // the body field at fault, or null
    this.body = body;       // the whole JSON answer, or null
  }
}

const MESSAGES = {
  400: 'The request was not valid.',
  401: 'Please sign in first.',
  403: 'You are not allowed to do this.',
  404: 'It was not found.',
  409: 'This conflicts with a change made in the meantime.',
  413: 'What you sent is too large.',
  429: 'Too many requests. Please wait a moment and try again.',
  503: 'The service is busy. Please try again in a moment.',
  504: 'The service took too long to answer. Please try again.',
};

function messageFor(status) {
  return MESSAGES[status]
      || (status >= 500 ? 'Something went wrong on our side. Please try again.'
                        : 'The request failed.');
}

// "unknown business type" -> "Unknown business type."
export function sentence(s) {
  const t = String(s || '').trim();
  if (!t) return '';
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?\u2026]$/.test(first) ? first : `${first}.`;
}

export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = {
    method,
    headers: { Accept: 'application/json' },
    credentials: 'same-origin',
    signal,
  };

  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }

  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, '', 'The server could not be reached. '
                              + 'Check your connection and try again.');
  }

  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }

  if (!res.ok) {
    const e = (data && data.error) || {};
    let message = e.message ? sentence(e.message) : messageFor(res.status);
    if (e.hint) message += ` ${sentence(e.hint)}`;
    throw new ApiError(res.status, e.code || '', message, e.detail || '',
                       e.hint || '', data);
  }

  return data;
}

// The signed-in account (GET /api/me), or null when nobody is signed in.
export async function signedIn() {
  try {
    return await api('/api/me');
  } catch (err) {
    if (err.status === 401) return null;
    throw err;
  }
}

// ---------------------------------------------------------------- addresses

// A query argument of this page's address.
export function param(name) {
  return new URLSearchParams(location.search).get(name);
}

// A positive integer query argument, or null.
export function idParam(name) {
  const v = param(name);
  return v && /^[1-9][0-9]{0,17}$/.test(v) ? v : null;
}

// Only a path on this site: "/x", never "//host" or "/\host".
export function safePath(p, fallback = null) {
  return typeof p === 'string' && p.length <= 512
         && /^\/(?![/\\])[^\\\s]*$/.test(p) ? p : fallback;
}

// The sign-in page, coming back here afterwards.
export function signinHref(back = location.pathname + location.search) {
  return `/signin.html?return=${encodeURIComponent(back)}`;
}

// ---------------------------------------------------------------- showing

// A status line: text and a class (ok, bad, or none while working).
export function say(el, text, cls = '') {
  el.textContent = text;
  el.className = `message ${cls}`.trim();
}

// An element: el('a', { href: '/x', class: 'y' }, 'text', child, ...).
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') {
      e.addEventListener(k.slice(2), v);
    } else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.flat().filter((c) => c != null && c !== false));
  return e;
}

// The label a person sees for a field: data-label, else its <label>.
function labelOf(input) {
  if (!input) return null;
  if (input.dataset && input.dataset.label) return input.dataset.label;
  const l = input.labels && input.labels[0];
  return l ? l.textContent.trim().replace(/\s+/g, ' ') : null;
}

// Where the field named NAME is: an input named so inside the form, else
// any element marked data-field="NAME" on the page.
function fieldElement(form, name) {
  if (!name) return null;
  const esc = CSS.escape(name);
  return (form && form.querySelector(`[name="${esc}"]`))
      || document.querySelector(`[data-field="${esc}"]`);
}

// The API's messages name fields as the body does ("ends_at must be after
// starts_at."); the page says what its labels say ("End must be after
// start.").
function humanise(text, form) {
  return text.replace(/\b[A-Za-z][a-z0-9]*(?:_[a-z0-9]+)*\b/g, (word, at) => {
    if (at !== 0 && !word.includes('_')) return word;
    const name = word[0].toLowerCase() + word.slice(1);
    const f = form && form.querySelector(`[name="${CSS.escape(name)}"]`);
    const label = f && labelOf(f);
    if (!label) return word;
    return at === 0 ? label : label[0].toLowerCase() + label.slice(1);
  });
}

// Removes every error shown by showError() in FORM (or on the page).
export function clearErrors(form = document) {
  for (const p of form.querySelectorAll('.field-error')) p.remove();
  for (const i of form.querySelectorAll('[aria-invalid="true"]')) {
    i.removeAttribute('aria-invalid');
    const ids = (i.getAttribute('aria-describedby') || '').split(/\s+/)
      .filter((id) => id && !id.endsWith('-error'));
    if (ids.length) i.setAttribute('aria-describedby', ids.join(' '));
    else i.removeAttribute('aria-describedby');
  }
  if (form !== document) {
    for (const p of document.querySelectorAll('.field-error[data-form]')) {
      if (p.dataset.form === form.id) p.remove();
    }
  }
}

// Puts TEXT next to the field NAME of FORM (marked invalid, described by
// the sentence) and focuses it.  False when there is no such field.
export function fieldError(form, name, text, { focus = true } = {}) {
  const f = fieldElement(form, name);
  if (!f) return false;
  const id = `${(f.id || name).replace(/[^A-Za-z0-9_-]/g, '_')}-error`;
  let p = document.getElementById(id);
  if (!p) {
    p = el('p', { id, class: 'field-error', role: 'alert' });
    if (form && form.id && !form.contains(f)) p.dataset.form = form.id;
    // After the input, or after the label wrapping a checkbox.
    const after = f.closest('label.check') || f;
    after.after(p);
  }
  p.textContent = text;
  if (f.matches('input, select, textarea')) {
    f.setAttribute('aria-invalid', 'true');
    const ids = new Set((f.getAttribute('aria-describedby') || '')
      .split(/\s+/).filter(Boolean));
    ids.add(id);
    f.setAttribute('aria-describedby', [...ids].join(' '));
    if (focus) f.focus();
  } else if (focus) {
    p.setAttribute('tabindex', '-1');
    p.focus();
  }
  return true;
}

// Shows ERR (an ApiError or any Error) for FORM: next to the field the API
// names when the page has it, else in the status line MESSAGE.
export function showError(err, { form = null, message = null } = {}) {
  const text = err && err.message ? err.message : String(err);
  if (err && err.field) {
    const human = humanise(text, form);
    if (fieldError(form, err.field, human)) {
      // Said by the button too, where the person is looking.
      if (message) say(message, human, 'bad');
      return;
    }
  }
  if (message) say(message, text, 'bad');
}

// Disables BUTTON and shows TEXT on it while FN runs; returns FN's result.
export async function busy(button, text, fn) {
  const before = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (text) button.textContent = text;
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    // Unless FN gave the button a new name meanwhile.
    if (!text || button.textContent === text) button.textContent = before;
  }
}

// ---------------------------------------------------------------- waiting

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Calls FN every INTERVAL ms (slowing down gently) until it returns
// something other than undefined, and returns that; throws when TIMEOUT ms
// pass.  Errors other than network trouble and 5xx end the wait.
export async function poll(fn, { interval = 1000, timeout = 120000 } = {}) {
  const end = Date.now() + timeout;
  let wait = interval;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 0 && err.status < 500)) {
        throw err;
      }
    }
    if (Date.now() + wait > end) {
      throw new ApiError(0, 'timeout', 'This is taking longer than it should. '
                         + 'Reload the page in a minute to see where it is.');
    }
    await sleep(wait);
    wait = Math.min(wait * 1.25, 5000);
  }
}
