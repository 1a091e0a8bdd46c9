// org-teams.js: the teams and submissions sections of the organiser's
// event page (organiser/event.html), for events that are not drafts.
//
//   GET  /api/orgs/{org}/events/{id}/teams                {"teams": [{"id",
//        "name", "size", "members": [{"user_id", "name", "email"}],
//        "submission"}], "unassigned": [...], "participants",
//        "submission_deadline", "closes_at"}
//   POST /api/orgs/{org}/events/{id}/teams                {"by": "size" |
//        "count", "value", "force"?}: new teams (mailed to everyone)
//   POST /api/orgs/{org}/events/{id}/teams/moves          {"user_id",
//        "team_id"}
//   PUT  /api/orgs/{org}/events/{id}/submission-deadline  {"deadline"}
//   GET  /api/orgs/{org}/events/{id}/submissions          {"submissions":
//        [{"title", "link", "description", "updated_by", "updated_at",
//        "team": {"name", "members"}}], "closes_at", "open"}

import { api, say, el, clearErrors, showError, fieldError, busy }
  from '/js/api.js';
import { when, zonedToUtc, utcToZoned, zoneName } from '/js/format.js';

const $ = (id) => document.getElementById(id);

let org = null;
let event = null;
let teams = null;
let bound = false;

function base() {
  return `/api/orgs/${org}/events/${event.id}`;
}

function person(p) {
  return el('li', {}, p.name, ' ', el('span', { class: 'muted' }, `<${p.email}>`));
}

function renderTeams(res) {
  teams = res;
  const blocks = res.teams.map((t) => el('div', { class: 'team card', 'data-team': t.name },
    el('h3', {}, `${t.name} `, el('span', { class: 'muted' },
      `(${t.size} ${t.size === 1 ? 'person' : 'people'})`)),
    el('ul', {}, ...t.members.map(person)),
    t.submission
      ? el('p', {}, 'Handed in: ', el('a', { href: t.submission.link, rel: 'noopener noreferrer',
                                             target: '_blank' }, t.submission.title))
      : el('p', { class: 'muted' }, 'Nothing handed in yet.')));
  if (res.unassigned.length) {
    blocks.push(el('div', { class: 'team card' },
      el('h3', {}, 'In no team'),
      el('ul', {}, ...res.unassigned.map(person))));
  }
  $('teams').replaceChildren(...blocks);

  const n = res.participants;
  say($('split-message'), res.teams.length
    ? `${n} ${n === 1 ? 'participant' : 'participants'} in ${res.teams.length} `
      + `${res.teams.length === 1 ? 'team' : 'teams'}. Splitting again replaces these teams.`
    : n ? `${n} ${n === 1 ? 'person holds' : 'people hold'} a ticket; no teams yet.`
        : 'Nobody holds a ticket yet: teams can be made once people register.');

  // Moving people.
  const people = [
    ...res.teams.flatMap((t) => t.members.map((m) => [m, t.name])),
    ...res.unassigned.map((m) => [m, 'no team']),
  ];
  $('move-user').replaceChildren(...people.map(([m, where]) =>
    el('option', { value: String(m.user_id) }, `${m.name} (${where})`)));
  $('move-team').replaceChildren(
    ...res.teams.map((t) => el('option', { value: String(t.id) }, t.name)),
    el('option', { value: '' }, 'No team'));
  $('move').hidden = !res.teams.length || !people.length;

  if (!$('deadline').value && res.submission_deadline) {
    $('deadline').value = utcToZoned(res.submission_deadline, event.time_zone);
  }
}

async function loadTeams() {
  try {
    renderTeams(await api(`${base()}/teams`));
  } catch (err) {
    say($('split-message'), err.message, 'bad');
  }
}

function renderSubmissions(res) {
  const tz = event.time_zone;
  $('deadline-form').querySelector('.muted').textContent =
    `In the event's time zone, ${zoneName(tz)}. `
    + (res.open ? `Submissions are open until ${when(res.closes_at, tz)}.`
                : `Submissions closed on ${when(res.closes_at, tz)}.`);
  $('submissions').replaceChildren(...(res.submissions.length
    ? res.submissions.map((s) => el('li', { class: 'card' },
        el('h3', {}, `${s.team.name}: `,
           el('a', { href: s.link, rel: 'noopener noreferrer', target: '_blank' }, s.title)),
        ...(s.description || '').split(/\n\s*\n/).filter((p) => p.trim())
          .map((p) => el('p', {}, p.trim())),
        el('p', { class: 'muted' },
           `By ${s.team.members.map((m) => m.name).join(', ') || s.team.name}. `
           + `Last saved by ${s.updated_by || 'a member'}, ${when(s.updated_at, tz)}.`)))
    : [el('li', { class: 'muted empty' }, 'No submissions yet.')]));
}

async function loadSubmissions() {
  try {
    const res = await api(`${base()}/submissions`);
    renderSubmissions(res);
    say($('submissions-message'), '');
  } catch (err) {
    say($('submissions-message'), err.message, 'bad');
  }
}

function bind() {
  const split = $('split');
  const value = $('split-value');

  for (const r of split.querySelectorAll('input[name="by"]')) {
    r.addEventListener('change', () => {
      const bySize = split.querySelector('input[name="by"]:checked').value === 'size';
      $('split-value-label').textContent = bySize ? 'People per team' : 'Number of teams';
      value.dataset.label = bySize ? 'The team size' : 'The number of teams';
    });
  }

  async function doSplit(force) {
    const message = $('split-message');
    clearErrors(split);
    const by = split.querySelector('input[name="by"]:checked').value;
    const v = value.value.trim();
    if (!/^[1-9][0-9]{0,4}$/.test(v) || Number(v) > 10000) {
      fieldError(split, 'value', by === 'size'
        ? 'Please enter how many people each team has (1 to 10000).'
        : 'Please enter how many teams to make (1 to 10000).');
      return;
    }
    const body = { by, value: Number(v) };
    if (force) body.force = true;
    say(message, 'Making the teams and emailing everyone their team\u2026');
    try {
      renderTeams(await api(`${base()}/teams`, { method: 'POST', body }));
      say(message, `${teams.teams.length} ${teams.teams.length === 1 ? 'team' : 'teams'} `
          + 'made; every member was emailed the link to their team page.', 'ok');
      loadSubmissions();
    } catch (err) {
      showError(err, { form: split, message });
      if (err.status === 409 && /force/.test(err.hint || '')) {
        say(message, err.message.replace(/ Send "force".*$/, ''), 'bad');
        const again = el('button', { type: 'button', class: 'small danger' },
                         'Split anyway and delete their submissions');
        again.addEventListener('click', () => busy(again, 'Splitting\u2026', () => doSplit(true)));
        message.append(' ', again);
      }
    }
  }

  split.addEventListener('submit', (ev) => {
    ev.preventDefault();
    busy($('split-submit'), 'Splitting\u2026', () => doSplit(false));
  });

  $('move').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const form = $('move');
    const message = $('move-message');
    clearErrors(form);
    const userId = Number($('move-user').value);
    const teamId = $('move-team').value ? Number($('move-team').value) : null;
    const who = $('move-user').selectedOptions[0].textContent.replace(/ \(.*\)$/, '');
    const where = $('move-team').selectedOptions[0].textContent;
    busy($('move-submit'), 'Moving\u2026', async () => {
      try {
        const r = await api(`${base()}/teams/moves`, { method: 'POST',
                            body: { user_id: userId, team_id: teamId } });
        say(message, !r.moved ? `${who} is already in ${where}.`
            : teamId ? `${who} is now in ${where}; we emailed them the link.`
                     : `${who} is now in no team.`, 'ok');
        await loadTeams();
      } catch (err) {
        showError(err, { form, message });
      }
    });
  });

  $('deadline-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const form = $('deadline-form');
    const message = $('deadline-message');
    clearErrors(form);
    const v = $('deadline').value;
    const deadline = v ? zonedToUtc(v, event.time_zone) : null;
    busy($('deadline-submit'), 'Saving\u2026', async () => {
      try {
        const r = await api(`${base()}/submission-deadline`, { method: 'PUT',
                            body: { deadline } });
        say(message, r.submission_deadline
          ? `Teams can hand in until ${when(r.closes_at, event.time_zone)}.`
          : `No deadline: teams can hand in until the event ends, `
            + `${when(r.closes_at, event.time_zone)}.`, 'ok');
        loadSubmissions();
      } catch (err) {
        showError(err, { form, message });
      }
    });
  });
}

// Shows the sections for EVENT of ORG (again after every change of it).
export function initTeams({ org: o, event: e }) {
  const show = e.status !== 'draft';
  $('teams-section').hidden = !show;
  $('submissions-section').hidden = !show;
  if (!show) return;
  const first = !event || event.id !== e.id;
  org = o;
  event = e;
  if (!bound) {
    bind();
    bound = true;
  }
  if (first) {
    if (e.team_size) $('split-value').value = String(e.team_size);
    loadTeams();
    loadSubmissions();
  }
}
