// privacy.js: privacy.html, where a person asks for a copy of their data
// or its deletion (POST /api/gdpr/requests; a link to confirm is mailed and
// opened on confirm.html, which comes back here with ?confirmed=<kind>),
// and where the mailed export link (#export=<token>) downloads the file
// (POST /api/gdpr/export: the token stays out of server logs).

import { api } from '/js/api.js';

const form = document.getElementById('request');
const email = document.getElementById('email');
const submit = document.getElementById('submit');
const message = document.getElementById('message');
const download = document.getElementById('download');
const fetchButton = document.getElementById('fetch');

function say(text, cls = '') {
  message.textContent = text;
  message.className = `message ${cls}`.trim();
}

const confirmed = new URLSearchParams(location.search).get('confirmed');
if (confirmed === 'export') {
  say('Your request is confirmed. We will email you a link to your data '
      + 'in a few minutes.', 'ok');
} else if (confirmed === 'delete') {
  say('Your request is confirmed. Your account and data will be deleted in '
      + 'a few minutes; we will email you when it is done.', 'ok');
}

const token = new URLSearchParams(location.hash.slice(1)).get('export');
if (token && /^[A-Za-z0-9_-]{43}$/.test(token)) {
  download.hidden = false;
}

fetchButton.addEventListener('click', async () => {
  fetchButton.disabled = true;
  say('Preparing your file\u2026');
  try {
    const data = await api('/api/gdpr/export', {
      method: 'POST', body: { token },
    });
    const blob = new Blob([JSON.stringify(data, null, 2)],
                          { type: 'application/json' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'my-data.json';
    document.body.append(a);
    a.click();
    a.remove();
    say('Your file is downloaded (my-data.json).', 'ok');
  } catch (err) {
    say(err.message, 'bad');
  } finally {
    fetchButton.disabled = false;
  }
});

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (!email.value.trim() || !email.checkValidity()) {
    say('Please enter your email address.', 'bad');
    email.focus();
    return;
  }
  const kind = form.elements.kind.value;
  submit.disabled = true;
  say('Sending\u2026');
  try {
    await api('/api/gdpr/requests', {
      method: 'POST', body: { email: email.value.trim(), kind },
    });
    say('Check your mail: we sent a link to confirm the request. '
        + 'It works for 15 minutes.', 'ok');
  } catch (err) {
    say(err.message, 'bad');
  } finally {
    submit.disabled = false;
  }
});
