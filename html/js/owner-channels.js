// owner-channels.js: /owner/channels.html — the business's channels (keys
// shown by their last four characters only), setting keys, dead-letter
// pushes with retry, booking conflicts with resolve (docs/rentals.md
// "Channels", conf/api/rentals_channels.conf).

import { api, el, say, busy, showError, clearErrors, signinHref }
  from '/js/api.js';

const $ = (id) => document.getElementById(id);
const when = (t) => (t ? new Date(t).toLocaleString() : '');

function showChannels(list) {
  const kind = $('kind');
  const chosen = kind.value;
  kind.replaceChildren(...list.map((c) =>
    el('option', { value: c.kind, text: c.label })));
  if (chosen) kind.value = chosen;
  $('channels').replaceChildren(...list.map((c) => {
    const cells = [
      el('th', { scope: 'row', text: c.label }),
      el('td', { class: 'api-key', text: c.api_key.set
                 ? `set, ending ${c.api_key.last4}` : 'not set' }),
      el('td', { class: 'webhook-secret',
                 text: c.webhook_secret.set ? 'set' : 'not set' }),
      el('td', { text: c.connected
                 ? `${location.origin}${c.webhook_path}` : '' }),
      el('td', { text: c.connected ? (c.last_push_at ? when(c.last_push_at)
                 : 'never') : '' }),
    ];
    const actions = el('td');
    if (c.connected) {
      actions.append(el('span', { text: c.enabled ? 'on ' : 'paused ' }),
        el('button', { type: 'button', class: 'secondary small',
          text: 'Disconnect', 'aria-label': `Disconnect ${c.label}`,
          onclick: async () => {
            await api(`/api/owner/channels/${c.kind}`, { method: 'DELETE' });
            loadChannels();
          } }));
    }
    return el('tr', { 'data-kind': c.kind,
                      class: c.connected ? 'connected' : 'not-connected' },
              ...cells, actions);
  }));
}

function showDead(list) {
  $('dead').replaceChildren(...(list.length ? list.map((d) => el('tr', {},
    el('td', { text: d.channel }),
    el('td', { text: `home #${d.property_id}` }),
    el('td', { text: `${d.attempts} attempt${d.attempts === 1 ? '' : 's'}` }),
    el('td', { text: d.last_error || '' }),
    el('td', { text: when(d.finished_at || d.created_at) }),
    el('td', {}, el('button', { type: 'button', class: 'secondary small',
      text: 'Retry', 'aria-label': `Retry push ${d.id}`,
      onclick: async (e) => {
        await busy(e.target, 'Retrying\u2026', async () => {
          try {
            await api(`/api/owner/channels/dead/${d.id}/retry`,
                      { method: 'POST' });
            say($('dead-message'), 'Queued again.', 'ok');
            loadDead();
          } catch (err) {
            showError(err, { message: $('dead-message') });
          }
        });
      } }))))
    : [el('tr', {}, el('td', { class: 'empty', text: 'None.' }))]));
}

function showErrors(list) {
  $('errors').replaceChildren(...(list.length ? list.map((x) => {
    const note = el('input', { type: 'text', maxlength: 2000,
      'aria-label': `How conflict ${x.id} was resolved` });
    return el('tr', { 'data-error': String(x.id) },
      el('td', { text: x.channel }),
      el('td', { text: `${x.check_in || '?'} \u2192 ${x.check_out || '?'}` }),
      el('td', { text: [x.guest_name, x.guest_email].filter(Boolean)
                 .join(', ') }),
      el('td', { text: x.reason }),
      el('td', { text: x.external_id ? `reservation ${x.external_id}` : '' }),
      el('td', {}, note, ' ', el('button', { type: 'button',
        class: 'secondary small', text: 'Resolve',
        'aria-label': `Resolve conflict ${x.id}`,
        onclick: async (e) => {
          await busy(e.target, 'Saving\u2026', async () => {
            try {
              const body = note.value.trim() ? { resolution: note.value.trim() }
                                             : {};
              await api(`/api/owner/booking-errors/${x.id}/resolve`,
                        { method: 'POST', body });
              say($('errors-message'), 'Marked resolved.', 'ok');
              loadErrors();
            } catch (err) {
              showError(err, { message: $('errors-message') });
            }
          });
        } })));
  }) : [el('tr', {}, el('td', { class: 'empty', text: 'None open.' }))]));
}

async function loadChannels() {
  showChannels((await api('/api/owner/channels')).channels);
}
async function loadDead() {
  showDead((await api('/api/owner/channels/dead')).dead);
}
async function loadErrors() {
  showErrors((await api('/api/owner/booking-errors')).errors);
}

$('keys').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  const body = { enabled: form.enabled.checked };
  for (const k of ['api_key', 'webhook_secret']) {
    if (form[k].value !== '') body[k] = form[k].value;
  }
  await busy(form.querySelector('button[type=submit]'), 'Saving\u2026',
    async () => {
      try {
        await api(`/api/owner/channels/${form.kind.value}`,
                  { method: 'PUT', body });
        form.api_key.value = '';
        form.webhook_secret.value = '';
        say($('keys-message'), 'Saved.', 'ok');
        await loadChannels();
      } catch (err) {
        showError(err, { form, message: $('keys-message') });
      }
    });
});

(async () => {
  try {
    await Promise.all([loadChannels(), loadDead(), loadErrors()]);
    for (const s of ['channels-section', 'dead-section', 'errors-section']) {
      $(s).hidden = false;
    }
    $('loading').hidden = true;
  } catch (err) {
    if (err.status === 401) location.href = signinHref();
    else say($('loading'), err.message, 'bad');
  }
})();
