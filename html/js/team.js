// team.js: a participant's team for an event (team.html?event=N, the link
// mailed when teams are made).
//
//   GET  /api/events/{id}/team              {"event", "team": {"name",
//        "members": [{"name", "you"}]}, "submission", "closes_at",
//        "editable"}; 401 signed out, 404 in no team
//   PUT  /api/events/{id}/team/submission   {"title", "link", "description"}
//   POST /api/events/{id}/team-link         {"email"}: the link mailed again
//
// The submission can be changed by any member until the deadline.

import { api, say, el, clearErrors, showError, fieldError, idParam,
         signinHref, busy } from '/js/api.js';
import { range, when, zoneName, localZone } from '/js/format.js';

const $ = (id) => document.getElementById(id);

const eventId = idParam('event');
const form = $('submission');
let tz = localZone();

function noTeam(text, { signin = false } = {}) {
  $('loading').hidden = true;
  $('no-team-text').textContent = text;
  $('signin-line').hidden = !signin;
  $('signin-link').href = signinHref();
  $('no-team').hidden = false;
  $('link-section').hidden = false;
}

function renderSubmission(s, res) {
  const closes = res.closes_at;
  $('deadline').textContent = res.editable
    ? `Your team can hand in and change its work until ${when(closes, tz)} `
      + `(${zoneName(tz, new Date(closes))}).`
    : `Submissions closed on ${when(closes, tz)} (${zoneName(tz, new Date(closes))}).`;
  $('deadline').className = res.editable ? '' : 'muted';

  if (s) {
    $('view-title').textContent = s.title;
    $('view-link').textContent = s.link;
    $('view-link').href = /^https?:\/\//.test(s.link) ? s.link : '#';
    $('view-description').replaceChildren(...(s.description || '').split(/\n\s*\n/)
      .filter((p) => p.trim()).map((p) => el('p', {}, p.trim())));
    $('view-by').textContent = s.updated_by && s.updated_at
      ? `Last saved by ${s.updated_by}, ${when(s.updated_at, tz)}.` : '';
  }
  $('submission-view').hidden = !s || res.editable;

  form.hidden = !res.editable;
  if (res.editable) {
    $('title').value = s ? s.title : '';
    $('link').value = s ? s.link : '';
    $('description').value = s ? s.description : '';
    $('submit').textContent = s ? 'Save the changes' : 'Hand in';
  } else if (!s) {
    $('deadline').textContent += ' Your team did not hand anything in.';
  }
  $('submission-section').hidden = false;
}

function render(res) {
  const e = res.event;
  document.title = `${res.team.name} \u00b7 ${e.title} \u00b7 Platform`;
  $('team-name').textContent = res.team.name;
  $('event-link').textContent = e.title;
  $('event-link').href = `/event.html?id=${e.id}`;
  $('event-when').textContent = `${range(e.starts_at, e.ends_at, tz)} (${zoneName(tz, new Date(e.starts_at))})`;
  $('members').replaceChildren(...res.team.members.map((m) =>
    el('li', {}, m.name, m.you ? el('span', { class: 'muted' }, ' (you)') : null)));
  $('loading').hidden = true;
  $('team-section').hidden = false;
  renderSubmission(res.submission, res);
}

async function load() {
  if (!eventId) {
    noTeam('This page needs the event number from your team email, like '
           + 'team.html?event=12.');
    $('link-section').hidden = true;
    return;
  }

  let res;
  try {
    res = await api(`/api/events/${eventId}/team`);
  } catch (err) {
    if (err.status === 401) {
      noTeam('Sign in with the address you registered with to see your team '
             + 'and hand in your work.', { signin: true });
    } else if (err.status === 404) {
      noTeam(`${err.message} Teams are made by the organiser; you get an `
             + 'email with this link when yours is ready.');
    } else {
      $('loading').textContent = err.message;
      $('loading').className = 'bad';
    }
    return;
  }

  // The event's own time zone (the person's when the answer has none).
  if (res.event.time_zone) tz = res.event.time_zone;
  render(res);
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const message = $('message');
  clearErrors(form);
  say(message, '');
  const bad = [
    ['title', !$('title').value.trim(), 'Please give your work a title.'],
    ['link', !$('link').value.trim(), 'Please enter the link to your work.'],
    ['link', $('link').value.trim() && (!$('link').checkValidity()
              || !/^https?:\/\//i.test($('link').value.trim())),
     'The link is a web address starting with https://.'],
  ].filter(([, b]) => b);
  if (bad.length) {
    bad.forEach(([name, , text], i) => fieldError(form, name, text, { focus: i === 0 }));
    say(message, 'Please correct the fields marked above.', 'bad');
    return;
  }
  const body = {
    title: $('title').value.trim(),
    link: $('link').value.trim(),
    description: $('description').value,
  };
  busy($('submit'), 'Saving\u2026', async () => {
    try {
      const s = await api(`/api/events/${eventId}/team/submission`,
                          { method: 'PUT', body });
      say(message, `Handed in: \u201c${s.title}\u201d. Your teammates see it too; `
          + 'you can change it until the deadline.', 'ok');
      $('submit').textContent = 'Save the changes';
    } catch (err) {
      showError(err, { form, message });
    }
  });
});

$('team-link').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = $('team-link');
  const message = $('link-message');
  clearErrors(f);
  const input = $('email');
  const email = input.value.trim();
  if (!email || !input.checkValidity()) {
    fieldError(f, 'email', email ? 'This does not look like an email address.'
                                 : 'Please enter your email address.');
    return;
  }
  busy($('link-submit'), 'Sending\u2026', async () => {
    try {
      await api(`/api/events/${eventId}/team-link`, { method: 'POST', body: { email } });
      f.hidden = true;
      say(message, `Check your mail: if ${email} is in a team for this event, `
          + 'we sent it the link to the team page.', 'ok');
    } catch (err) {
      showError(err, { form: f, message });
    }
  });
});

load();
