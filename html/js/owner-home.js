// owner-home.js: /owner/home.html?id=N — one home's key box codes, its
// calendar address and imported calendars, and a mail to its past guests
// (docs/rentals.md, conf/api/rentals_comms.conf).

import { api, el, say, busy, showError, clearErrors, idParam,
         signinHref } from '/js/api.js';

const $ = (id) => document.getElementById(id);
const id = idParam('id');
const base = `/api/owner/properties/${id}`;

const when = (t) => (t ? new Date(t).toLocaleString() : '');

function showCodes(k) {
  $('current-code').textContent = k.current || 'none yet';
  $('codes').replaceChildren(...k.codes.map((c) => el('tr', {},
    el('td', { text: c.code }),
    el('td', { text: c.current ? 'on the box' : c.set_at ? 'before'
                                  : 'for the next changeover' }),
    el('td', { text: c.reason }),
    el('td', { text: when(c.set_at || c.created_at) }))));
}

function showIcal(c) {
  $('export-url').value = c.export_url;
  $('feeds').replaceChildren(...c.feeds.map((f) => {
    const now = el('button', { type: 'button', class: 'secondary',
                               text: 'Import now' });
    now.addEventListener('click', async () => {
      await api(`${base}/ical/feeds/${f.id}/import`, { method: 'POST' });
      say($('ical-message'), 'Importing\u2026', 'ok');
      setTimeout(loadIcal, 1500);
    });
    const del = el('button', { type: 'button', class: 'secondary',
                               text: 'Remove' });
    del.addEventListener('click', async () => {
      await api(`${base}/ical/feeds/${f.id}`, { method: 'DELETE' });
      loadIcal();
    });
    return el('tr', { class: `feed feed-${f.status}` },
      el('td', { text: f.channel }),
      el('td', { text: f.status === 'ok'
                       ? `ok: ${f.blocks} dates blocked` : f.status }),
      el('td', { text: f.last_error || '' }),
      el('td', { text: when(f.last_import_at) }),
      el('td', {}, now, ' ', del));
  }));
}

async function loadCodes() { showCodes(await api(`${base}/key-codes`)); }
async function loadIcal() { showIcal(await api(`${base}/ical`)); }

$('rotate').addEventListener('click', async (e) => {
  await busy(e.target, 'Changing\u2026', async () => {
    try {
      showCodes(await api(`${base}/key-codes/rotate`, { method: 'POST' }));
      say($('keys-message'), 'New code set; the cleaner is told.', 'ok');
    } catch (err) {
      showError(err, { message: $('keys-message') });
    }
  });
});

$('ical-rotate').addEventListener('click', async () => {
  showIcal(await api(`${base}/ical/rotate`, { method: 'POST' }));
  say($('ical-message'), 'New address: give it to your channels again.', 'ok');
});

$('feed').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  try {
    await api(`${base}/ical/feeds`, { method: 'POST', body: {
      channel: form.channel.value, url: form.url.value.trim() } });
    form.reset();
    say($('ical-message'), 'Importing\u2026', 'ok');
    await loadIcal();
    setTimeout(loadIcal, 1500);
  } catch (err) {
    showError(err, { form, message: $('ical-message') });
  }
});

$('announce').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  await busy(form.querySelector('button'), 'Sending\u2026', async () => {
    try {
      const r = await api(`${base}/announce`, { method: 'POST', body: {
        subject: form.subject.value, text: form.text.value } });
      say($('announce-message'), r.recipients === 0
        ? 'Nobody has stayed here yet.'
        : `Sending to ${r.recipients} past guest${r.recipients > 1 ? 's' : ''}.`,
        'ok');
      form.reset();
    } catch (err) {
      showError(err, { form, message: $('announce-message') });
    }
  });
});

(async () => {
  try {
    if (!id) throw new Error('This page needs ?id= of a home.');
    const p = await api(base);
    $('name').textContent = p.name;
    await Promise.all([loadCodes(), loadIcal()]);
    for (const s of ['keys-section', 'ical-section', 'announce-section']) {
      $(s).hidden = false;
    }
    $('loading').hidden = true;
  } catch (err) {
    if (err.status === 401) location.href = signinHref();
    else say($('loading'), err.message, 'bad');
  }
})();
