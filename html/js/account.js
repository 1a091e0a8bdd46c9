// account.js: the account page (account.html).
//
//   GET  /api/me                  email, roles, memberships, sessions, TOTP
//   POST /api/auth/logout         sign out everywhere
//   POST /api/auth/totp/enrol     a new TOTP key: {"uri", "secret"}
//   POST /api/auth/totp/verify    {"code"}: turns TOTP on, the session gets
//                                 the second factor
//
// Without a session /api/me answers 401: the page offers to sign in.

import { api } from '/js/api.js';

const $ = (id) => document.getElementById(id);

function say(el, text, cls = '') {
  el.textContent = text;
  el.className = `message ${cls}`.trim();
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso
      : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

const ROLE_NAMES = {
  participant: 'participant',
  organiser: 'organiser',
  owner: 'rental owner',
  staff: 'staff',
  admin: 'platform administrator',
};

function showSignedOut(text) {
  $('loading').hidden = true;
  for (const id of ['account', 'sessions-section', 'totp-section']) {
    $(id).hidden = true;
  }
  $('signed-out-text').textContent = text;
  $('signed-out').hidden = false;
}

function renderAccount(me) {
  $('email').textContent = me.email;
  $('roles').textContent = me.roles
      .map((r) => ROLE_NAMES[r.split(':')[0]] || r).filter((v, i, a) => a.indexOf(v) === i)
      .join(', ');

  const list = $('memberships');
  list.replaceChildren(...me.memberships.map((m) => {
    const li = document.createElement('li');
    const name = ROLE_NAMES[m.role] || m.role;
    li.textContent = m.org_id == null ? name : `${name} of organisation ${m.org_id}`;
    return li;
  }));

  const body = $('sessions');
  body.replaceChildren(...me.sessions.map((s) => {
    const tr = document.createElement('tr');
    for (const v of [when(s.created_at), when(s.expires_at), s.client_ip || '',
                     s.user_agent || '']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  if (!me.sessions.length) {
    const tr = document.createElement('tr');
    const td = document.createElement('td');
    td.colSpan = 4;
    td.textContent = 'No sessions recorded.';
    tr.append(td);
    body.append(tr);
  }

  renderTotp(me);

  $('loading').hidden = true;
  $('account').hidden = false;
  $('sessions-section').hidden = false;
}

function renderTotp(me) {
  const section = $('totp-section');
  section.hidden = !(me.staff || me.totp.enrolled);
  if (section.hidden) return;

  const state = $('totp-state');
  $('totp-enrol').hidden = true;
  $('totp-verify').hidden = true;

  if (me.totp.enabled && me.mfa) {
    state.textContent = 'Two-factor authentication is on, and this session '
                        + 'is verified.';
  } else if (me.totp.enabled) {
    state.textContent = 'Two-factor authentication is on. Enter the current '
                        + 'code from your app to use staff pages.';
    $('totp-verify').hidden = false;
  } else if (me.totp.enrolled && !$('totp-setup').hidden) {
    state.textContent = 'Enter the code your app shows to finish the set-up.';
    $('totp-verify').hidden = false;
  } else {
    state.textContent = 'Two-factor authentication is off.';
    $('totp-enrol').hidden = false;
  }
}

async function load() {
  try {
    const me = await api('/api/me');
    renderAccount(me);
    return me;
  } catch (err) {
    if (err.status === 401) {
      showSignedOut('Sign in to see your account.');
    } else {
      $('loading').textContent = err.message;
      $('loading').className = 'bad';
    }
    return null;
  }
}

$('logout').addEventListener('click', async () => {
  const button = $('logout');
  button.disabled = true;
  say($('logout-message'), 'Signing out\u2026');
  try {
    await api('/api/auth/logout', { method: 'POST', body: {} });
    showSignedOut('You are signed out on every device.');
  } catch (err) {
    say($('logout-message'), err.message, 'bad');
  } finally {
    button.disabled = false;
  }
});

$('totp-start').addEventListener('click', async () => {
  const button = $('totp-start');
  button.disabled = true;
  say($('totp-message'), '');
  try {
    const res = await api('/api/auth/totp/enrol', { method: 'POST', body: {} });
    $('totp-uri').href = res.uri;
    $('totp-uri').title = res.uri;
    $('totp-secret').textContent = res.secret.replace(/(.{4})(?=.)/g, '$1 ');
    $('totp-setup').hidden = false;
    $('totp-enrol').hidden = true;
    $('totp-state').textContent = 'Enter the code your app shows to finish the set-up.';
    $('totp-verify').hidden = false;
    $('totp-code').focus();
  } catch (err) {
    say($('totp-message'), err.message, 'bad');
  } finally {
    button.disabled = false;
  }
});

$('totp-verify').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const code = $('totp-code').value.replace(/\s+/g, '');
  if (!/^[0-9]{6}$/.test(code)) {
    say($('totp-message'), 'Enter the 6 digits your app shows.', 'bad');
    $('totp-code').focus();
    return;
  }
  const submit = ev.submitter || $('totp-verify').querySelector('button');
  submit.disabled = true;
  try {
    await api('/api/auth/totp/verify', { method: 'POST', body: { code } });
    $('totp-code').value = '';
    $('totp-setup').hidden = true;
    say($('totp-message'), 'Two-factor authentication is on. This session is verified.', 'ok');
    await load();
  } catch (err) {
    say($('totp-message'), err.message, 'bad');
  } finally {
    submit.disabled = false;
  }
});

load();
