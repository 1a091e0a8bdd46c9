// api.js: the one module pages use to call the Platform API.
//
//   import { api, ApiError } from '/js/api.js';
//   const events = await api('/api/events?limit=10');
//   await api('/api/items', { method: 'POST', body: { title: 'x' } });
//
// Requests and responses are JSON.  Cookies go only to our own origin, and
// a body is always sent as application/json, which a cross-site form cannot
// forge.  Failures throw an ApiError whose message is a sentence that can be
// shown to the person as it is.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;   // HTTP status, 0 when the server was not reached
    this.code = code;       // the API's error code (a SQLSTATE), or ''
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
    const e = data && data.error;
    throw new ApiError(res.status, (e && e.code) || '',
                       (e && e.message) || messageFor(res.status));
  }

  return data;
}
