// org-room.js: the organisers' view of a live event
// (organiser/room.html?event=N): help requests, the rooms with their live
// counts, and the admin room's chat (chat.js).
//
//   WS   /ws/events/{id}?room=admin       welcome (+ "help": open requests),
//        {"type":"help","request":{...}}, {"type":"help_cleared","id","by"};
//        sends {"type":"help_clear","id":N}
//   GET  /api/events/{id}/help            open requests (when the welcome
//                                         has none: an older server)
//   POST /api/events/{id}/help/{rid}/clear
//   GET  /api/events/{id}/chat/presence   {"rooms":[{"room","count","last_id"}]}
//
// A request is {"id","user":{id,name,avatar},"team_id","room","text","time"}.

import { api, say, el, idParam, signinHref } from '/js/api.js';
import { Chat, timeOf, userName } from '/js/chat.js';

const $ = (id) => document.getElementById(id);

const eventId = idParam('event');
const requests = new Map();   // id -> request
let chat = null;

function refuse(text, { signin = false } = {}) {
  $('loading').hidden = true;
  for (const s of ['chat', 'help', 'rooms']) $(s).hidden = true;
  $('refused-text').textContent = text;
  $('signin-line').hidden = !signin;
  $('signin-link').href = signinHref();
  $('refused').hidden = false;
}

function roomName(r) {
  if (r === 'main') return 'Main room';
  if (r === 'admin') return 'Organisers';
  const m = /^team:(\d+)$/.exec(r || '');
  return m ? `Team ${m[1]}` : r;
}

function teamRoom(req) {
  if (req.team_id) return `team:${req.team_id}`;
  return /^team:\d+$/.test(req.room || '') ? req.room : null;
}

function renderHelp() {
  const list = [...requests.values()].sort((a, b) => a.id - b.id);
  $('help-empty').hidden = list.length > 0;
  $('help-list').replaceChildren(...list.map((r) => {
    const room = teamRoom(r);
    const clear = el('button', { type: 'button', class: 'small', 'data-clear': r.id }, 'Clear');
    clear.addEventListener('click', () => clearHelp(r.id, clear));
    return el('li', { class: 'card help-request', 'data-id': r.id },
      el('p', {},
        el('strong', {}, userName(r.user)),
        room ? ` (${roomName(room)})` : '',
        ' ', el('time', { class: 'muted', datetime: r.time || '' }, timeOf(r.time))),
      r.text ? el('p', { class: 'text' }, String(r.text)) : null,
      el('p', { class: 'links' },
        room ? el('a', { href: `/room.html?event=${eventId}&room=${room}`, target: '_blank',
                         rel: 'noopener' }, 'Join the team room') : null,
        clear));
  }));
}

async function clearHelp(id, button) {
  button.disabled = true;
  if (chat && chat.send({ type: 'help_clear', id })) return;   // help_cleared follows
  try {
    await api(`/api/events/${eventId}/help/${id}/clear`, { method: 'POST' });
    requests.delete(id);
    renderHelp();
  } catch (err) {
    button.disabled = false;
    say($('help-message'), err.message, 'bad');
  }
}

async function loadHelp() {
  try {
    const r = await api(`/api/events/${eventId}/help`);
    const list = Array.isArray(r) ? r : (r && (r.requests || r.help)) || [];
    for (const q of list) requests.set(q.id, q);
    renderHelp();
  } catch (err) {
    if (err.status === 404) {
      $('help-empty').textContent = 'Help requests are not available on this server yet.';
    } else {
      say($('help-message'), err.message, 'bad');
    }
  }
}

async function loadRooms() {
  try {
    const r = await api(`/api/events/${eventId}/chat/presence`);
    // main, then the teams by number, the organisers' room last
    const rank = (x) => (x.room === 'main' ? -1 : x.room === 'admin' ? 1e18
      : Number((/^team:(\d+)$/.exec(x.room) || [])[1] || 1e17));
    const rooms = (r.rooms || []).slice().sort((a, b) => rank(a) - rank(b));
    $('room-rows').replaceChildren(...rooms.map((x) => el('tr', { 'data-room': x.room },
      el('td', {}, roomName(x.room)),
      el('td', {}, String(x.count ?? 0)),
      el('td', {}, String(x.last_id ?? 0)),
      el('td', { class: 'actions' }, x.room === 'admin' ? null
        : el('a', { href: `/room.html?event=${eventId}&room=${x.room}`, target: '_blank',
                    rel: 'noopener' }, 'Join')))));
    const total = rooms.reduce((n, x) => n + (x.count || 0), 0);
    $('rooms-summary').textContent = rooms.length
      ? `${total} connected in ${rooms.length} room${rooms.length === 1 ? '' : 's'}.`
      : 'No room is live.';
  } catch (err) {
    $('rooms-summary').textContent = err.message;
  }
}

function onFrame(f) {
  if (f.type === 'refused') {
    refuse(f.status === 401 ? 'Please sign in as an organiser of this event.'
      : `${f.message} Only the event's organisers can open this page.`,
    { signin: f.status === 401 });
  } else if (f.type === 'welcome') {
    $('loading').hidden = true;
    for (const s of ['chat', 'help', 'rooms']) $(s).hidden = false;
    if (Array.isArray(f.help)) {
      requests.clear();
      for (const q of f.help) requests.set(q.id, q);
      renderHelp();
    } else {
      loadHelp();
    }
    loadRooms();
  } else if (f.type === 'help' && f.request) {
    requests.set(f.request.id, f.request);
    renderHelp();
  } else if (f.type === 'help_cleared') {
    const q = requests.get(f.id);
    requests.delete(f.id);
    renderHelp();
    if (q) {
      say($('help-message'), `${userName(q.user)}'s request was cleared`
          + (f.by ? ` by ${userName(f.by)}.` : '.'), 'ok');
    }
  } else if (f.type === 'presence') {
    loadRooms();
  } else if (f.type === 'error') {
    renderHelp();   // a refused help_clear: its button works again
  }
}

function main() {
  if (!eventId) {
    refuse('This address does not name an event.');
    return;
  }
  $('event-link').href = '/organiser/';
  api(`/api/events/${eventId}`).then((e) => {
    const title = (e && (e.title || (e.event && e.event.title))) || 'Event';
    $('event-link').textContent = `${title}: live`;
    const org = e && (e.organisation_id || (e.organisation && e.organisation.id));
    if (org) $('event-link').href = `/organiser/event.html?org=${org}&id=${eventId}`;
    document.title = `${title} \u00b7 Live \u00b7 Platform`;
  }).catch(() => {});

  chat = new Chat({
    event: eventId,
    room: 'admin',
    els: {
      log: $('messages'), older: $('older'), form: $('send'), input: $('text'),
      status: $('conn-status'), error: $('chat-error'), count: $('count'),
      present: $('present'),
    },
    onFrame,
  });
  chat.connect();
  $('rooms-refresh').addEventListener('click', loadRooms);
  setInterval(() => { if (!$('rooms').hidden) loadRooms(); }, 10000);
}

main();
