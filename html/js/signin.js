// signin.js: the sign-in form (signin.html).  POSTs the email address and
// the accepted consent version to /api/auth/link, then says to check the
// mail.  ?return=/path is passed on as the page to open after signing in.

import { api } from '/js/api.js';

const form = document.getElementById('signin');
const email = document.getElementById('email');
const consent = document.getElementById('consent');
const submit = document.getElementById('submit');
const message = document.getElementById('message');

function say(text, cls = '') {
  message.textContent = text;
  message.className = `message ${cls}`.trim();
}

// Only a path on this site: "/x", never "//host" or "/\host".
function returnPath() {
  const p = new URLSearchParams(location.search).get('return');
  return p && /^\/(?![/\\])[^\\\s]*$/.test(p) && p.length <= 512 ? p : null;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();

  const address = email.value.trim();
  if (!address) {
    say('Please enter your email address.', 'bad');
    email.focus();
    return;
  }
  if (!email.checkValidity()) {
    say('This does not look like an email address. Check it for typing mistakes.', 'bad');
    email.focus();
    return;
  }
  if (!consent.checked) {
    say('Please agree to the terms of use to continue.', 'bad');
    consent.focus();
    return;
  }

  const body = { email: address, consent_version: consent.dataset.version };
  const back = returnPath();
  if (back) body.return_path = back;

  submit.disabled = true;
  say('Sending the link\u2026');

  try {
    await api('/api/auth/link', { method: 'POST', body });
    form.hidden = true;
    say(`Check your mail: we sent a sign-in link to ${address}. `
        + 'It works once, for 15 minutes. You can close this page.', 'ok');
  } catch (err) {
    say(err.message, 'bad');
  } finally {
    submit.disabled = false;
  }
});
