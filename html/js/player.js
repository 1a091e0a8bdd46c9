// player.js: the event's live video (docs/hls.md), for any page that has a
// place for it (event.html; room.html can mount it the same way).
//
//   import { mountPlayer } from '/js/player.js';
//   const player = mountPlayer(document.getElementById('video'), eventId);
//   player.stop();   // when leaving
//
// It asks GET /api/events/{id}/stream every few seconds: {"watch", "live",
// "playlist", "signed_playlist", "recording"}.  Live: plays the playlist
// with hls.js (/vendor/hls.min.mjs, copied from npm by make) where the
// browser has MediaSource, natively otherwise (Safari), and shows "Live".
// Not live: says so, and offers the recording when there is one.  Someone
// without a ticket ("watch": false) or signed out (401) is told why, and
// nothing else is fetched.  The session cookie goes with every request of hls.js
// (same origin), so the playlist URL needs no token.

import { api } from '/js/api.js';

const POLL_MS = 5000;

function node(tag, attrs = {}, text = '') {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text) n.textContent = text;
  return n;
}

export function mountPlayer(section, eventId) {
  const status = node('p', { class: 'muted', role: 'status',
                             'aria-live': 'polite' }, 'Looking for the stream…');
  const badge = node('span', { class: 'badge', hidden: '' }, 'Live');
  const video = node('video', { controls: '', playsinline: '', muted: '',
                                preload: 'none', width: '640' });
  video.muted = true;         // autoplay is allowed muted
  video.hidden = true;
  video.style.maxWidth = '100%';
  const replay = node('button', { type: 'button', hidden: '' },
                      'Watch the recording');

  section.hidden = false;
  section.append(badge, status, video, replay);

  let hls = null;
  let playing = null;         // the URL being played
  let timer = null;
  let stopped = false;

  async function play(url, live) {
    if (playing === url) return;
    detach();
    playing = url;
    video.hidden = false;

    if (video.canPlayType('application/vnd.apple.mpegurl')
        && !window.MediaSource) {
      video.src = url;                       // Safari: native HLS
    } else {
      const { default: Hls } = await import('/vendor/hls.min.mjs');
      if (!Hls.isSupported()) {
        status.textContent = 'This browser cannot play the stream.';
        return;
      }
      hls = new Hls({ lowLatencyMode: false,
                      liveSyncDurationCount: 2,
                      xhrSetup: (xhr) => { xhr.withCredentials = true; } });
      hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) {
          status.textContent = 'The stream was interrupted; retrying…';
          detach();
        }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    }
    video.play().catch(() => {
      status.textContent = live ? 'Press play to watch live.'
                                : 'Press play to watch the recording.';
    });
  }

  function detach() {
    if (hls) { hls.destroy(); hls = null; }
    playing = null;
  }

  async function check() {
    if (stopped) return;
    let s;
    try {
      s = await api(`/api/events/${encodeURIComponent(eventId)}/stream`);
    } catch (err) {
      if (err.status === 401) {
        status.textContent = 'Sign in with your ticket to watch the stream.';
        return;                              // no polling
      }
      if (err.status === 403 || err.status === 404) {
        status.textContent = 'The live stream is for ticket holders.';
        return;
      }
      status.textContent = err.message;
      timer = setTimeout(check, POLL_MS);
      return;
    }

    if (!s.watch) {
      status.textContent = 'The live stream is for ticket holders.';
      return;                                // no polling
    }

    badge.hidden = !s.live;
    section.dataset.live = s.live ? 'true' : 'false';

    if (s.live) {
      status.textContent = 'Live now.';
      replay.hidden = true;
      await play(s.playlist, true);
    } else if (playing && playing === s.recording) {
      // watching the recording: leave it alone
    } else {
      if (playing) detach();
      video.hidden = true;
      status.textContent = s.recording
        ? 'The stream is offline. The recording can be watched.'
        : 'The stream is offline. It starts here when the host goes live.';
      replay.hidden = !s.recording;
      replay.onclick = () => { replay.hidden = true; play(s.recording, false); };
    }
    timer = setTimeout(check, POLL_MS);
  }

  check();

  return {
    video,
    stop() {
      stopped = true;
      clearTimeout(timer);
      detach();
    },
  };
}
