// confirm.js: the page a magic link opens (confirm.html#token=...).
//
// Nothing happens on load: mail scanners open links, and a token consumed
// by a scanner would be lost to the person.  The token sits in the
// fragment, which browsers never send to a server; the "Sign in" button
// POSTs it to /api/auth/confirm, which sets the session cookie, and the
// page then goes where the person was headed (return_path) or to the
// account page.

import { api } from '/js/api.js';

const button = document.getElementById('confirm');
const intro = document.getElementById('intro');
const message = document.getElementById('message');

function say(text, cls = '') {
  message.textContent = text;
  message.className = `message ${cls}`.trim();
}

function signinAgain(text) {
  say(text, 'bad');
  const a = document.createElement('a');
  a.href = '/signin.html';
  a.textContent = 'Request a new link';
  message.append(' ', a, '.');
}

const token = new URLSearchParams(location.hash.slice(1)).get('token');

if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) {
  intro.hidden = true;
  button.hidden = true;
  signinAgain('This page needs the complete link from your sign-in email. '
              + 'If you copied it, check that nothing is missing at the end.');
} else {
  button.disabled = false;
}

// Only a path on this site.
function safePath(p) {
  return typeof p === 'string' && /^\/(?![/\\])[^\\\s]*$/.test(p)
      ? p : '/account.html';
}

button.addEventListener('click', async () => {
  button.disabled = true;
  say('Signing in\u2026');

  try {
    const res = await api('/api/auth/confirm', {
      method: 'POST',
      body: { token },
    });
    // The token is spent; keep it out of the history.
    history.replaceState(null, '', location.pathname);
    say('You are signed in.', 'ok');
    location.assign(safePath(res && res.return_path));
  } catch (err) {
    if (err.status === 410) {
      intro.hidden = true;
      button.hidden = true;
      signinAgain(err.message);
    } else {
      say(err.message, 'bad');
      button.disabled = false;
    }
  }
});
