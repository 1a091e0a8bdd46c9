// room.js: a participant's live event room (room.html?event=N[&room=team]):
// the main chat and the team chat in tabs (chat.js), "ask for help", and
// the video player (section#video, player.js: live/offline, hls.js).
//
//   GET /api/events/{id}          the title
//   GET /api/events/{id}/team     whether there is a team tab (404: none)
//   WS  /ws/events/{id}?room=main|team|team:<id>
//   help: {"type":"help","text":...} -> {"type":"help_ack","id":N}; when an
//         organiser clears it: {"type":"help_cleared","id":N} (to the
//         connections of the room it was asked from)
//
// ?room=team (or team:<id> for an organiser) opens the team tab first.

import { api, say, idParam, param, signinHref } from '/js/api.js';
import { Chat } from '/js/chat.js';
import { mountPlayer } from '/js/player.js';

const $ = (id) => document.getElementById(id);

const eventId = idParam('event');
let helpTimer = null;
let helpId = null;     // the open request asked from this page
let player = false;    // the video player is mounted (once, at the welcome)

function refuse(text, { signin = false } = {}) {
  $('loading').hidden = true;
  for (const s of ['chat', 'help', 'video']) $(s).hidden = true;
  $('refused-text').textContent = text;
  $('signin-line').hidden = !signin;
  $('signin-link').href = signinHref();
  $('refused').hidden = false;
}

function helpDone(text, cls) {
  clearTimeout(helpTimer);
  helpTimer = null;
  $('help-button').disabled = false;
  say($('help-message'), text, cls);
}

function onFrame(f) {
  if (f.type === 'refused') {
    refuse(f.status === 401 ? 'Please sign in to enter the event room.'
      : f.status === 404 ? 'There is no such event or room.'
      : `${f.message} Only ticket holders can enter the event room.`,
    { signin: f.status === 401 });
  } else if (f.type === 'welcome') {
    $('loading').hidden = true;
    for (const s of ['chat', 'help', 'video']) $(s).hidden = false;
    if (!player) {
      player = true;
      $('video-text').remove();
      mountPlayer($('video'), eventId);    // live/offline, hls.js
    }
  } else if (f.type === 'help_ack') {
    helpId = f.id ?? null;
    helpDone('An organiser has been told and will be with you soon.', 'ok');
    $('help-text').value = '';
  } else if (f.type === 'help_cleared' && (helpId == null || f.id === helpId)) {
    helpId = null;
    say($('help-message'), 'An organiser has handled your request.', 'ok');
  } else if (f.type === 'error' && helpTimer) {
    helpDone('Your request could not be sent. Please ask in the main room instead.', 'bad');
  }
}

function selectTab(room) {
  for (const b of document.querySelectorAll('[role="tab"]')) {
    const on = b.dataset.room === room || (room.startsWith('team') && b.id === 'tab-team');
    b.setAttribute('aria-selected', String(on));
    if (on) $('chat-panel').setAttribute('aria-labelledby', b.id);
  }
}

async function main() {
  if (!eventId) {
    refuse('This address does not name an event. Open the room from "My events".');
    return;
  }
  const room = /^(main|team|team:\d+)$/.test(param('room') || '') ? param('room') : 'main';

  const chat = new Chat({
    event: eventId,
    room,
    els: {
      log: $('messages'), older: $('older'), form: $('send'), input: $('text'),
      status: $('conn-status'), error: $('chat-error'), count: $('count'),
      present: $('present'),
    },
    onFrame,
  });
  selectTab(room);
  if (room !== 'main') $('tab-team').hidden = false;
  chat.connect();

  for (const b of document.querySelectorAll('[role="tab"]')) {
    b.addEventListener('click', () => {
      const r = b.dataset.room === 'team' && room.startsWith('team:') ? room : b.dataset.room;
      if (r === chat.room) return;
      selectTab(r);
      const u = new URL(location.href);
      if (r === 'main') u.searchParams.delete('room'); else u.searchParams.set('room', r);
      history.replaceState(null, '', u);
      chat.switchRoom(r);
    });
  }

  $('help-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('help-text').value.trim();
    if (!chat.send({ type: 'help', text })) {
      say($('help-message'), 'Not connected. Please try again in a moment.', 'bad');
      return;
    }
    $('help-button').disabled = true;
    say($('help-message'), 'Asking the organisers\u2026');
    helpTimer = setTimeout(() => helpDone('No answer from the server. Please try again.',
                                          'bad'), 10000);
  });

  // The title, and whether there is a team tab; neither holds up the chat.
  api(`/api/events/${eventId}`).then((e) => {
    const title = (e && (e.title || (e.event && e.event.title))) || 'Event';
    $('event-link').textContent = `${title}: event room`;
    $('event-link').href = `/event.html?id=${eventId}`;
    document.title = `${title} \u00b7 Event room \u00b7 Platform`;
  }).catch(() => {});
  api(`/api/events/${eventId}/team`).then((t) => {
    if (t && t.team) {
      $('tab-team').hidden = false;
      $('tab-team').textContent = `Team: ${t.team.name}`;
    }
  }).catch(() => {});
}

main();
