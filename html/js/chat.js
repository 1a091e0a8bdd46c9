// chat.js: one chat room on a page (room.html, organiser/room.html): the
// WebSocket to /ws/events/{id}?room=..., the message log, presence, older
// messages over REST, reconnecting, error frames (docs/chat.md).
//
//   const chat = new Chat({ event, room: 'main', els: { log, older, form,
//                           input, status, error, count, present },
//                           onFrame: (frame) => {...} });
//   chat.connect();  chat.send({ type: 'help', text });  chat.switchRoom('team');
//
// Frames from the server: welcome (room, user, role, count, messages, and
// when the server has them: present [users], help [requests]), message,
// presence (joined|left, count; or a big room's summary: count, users),
// error (code, message); the others go to
// onFrame.  A field the server does not send yet is simply not shown.
//
// Everything the users wrote is put in the page as text (textContent),
// never as HTML.
//
// Reconnecting: when the socket closes for any reason other than this page
// closing it (1001 "server shutting down" on reload, 1006 a dropped
// connection, 1008 too slow...), it is opened again after 1, 2, 4 ... 30 s
// (with a little jitter).  A connection refused before the 101 shows no
// reason to a browser, so the page asks the REST history endpoint (same
// authorization) and stops retrying on a 401/403/404.

import { api, say, el } from '/js/api.js';

const ERRORS = {
  rate_limited: 'You are sending messages too fast. Please wait a moment.',
  too_long: 'This message is too long. Please shorten it.',
  busy: 'The chat is very busy. Please try again in a moment.',
};

export function timeOf(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? ''
    : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function userName(u) {
  return (u && u.name) || 'Someone';
}

export class Chat {
  constructor({ event, room = 'main', els, onFrame = () => {}, onState = () => {} }) {
    this.event = event;
    this.room = room;          // what was asked for ("team")
    this.joined = null;        // what the server says it is ("team:7")
    this.els = els;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.retries = 0;
    this.timer = null;
    this.stopped = false;
    this.me = null;
    this.count = 0;
    this.present = null;       // Map user id -> {user, n}, or null (unknown)
    this.items = new Map();    // message id -> <li>
    this.oldest = null;
    this.pending = [];         // frames to send once open

    els.form?.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = els.input.value.trim();
      if (!text) return;
      if (this.send({ type: 'message', text })) {
        els.input.value = '';
        say(els.error, '');
      } else {
        say(els.error, 'Not connected. Your message was not sent; '
            + 'it is still in the box.', 'bad');
      }
    });
    els.older?.addEventListener('click', () => this.loadOlder());
    window.addEventListener('pagehide', () => this.close());
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws/events/${this.event}`
      + `?room=${encodeURIComponent(this.room)}`;
  }

  historyPath(room, before, limit = 20) {
    const q = new URLSearchParams();
    if (before) q.set('before', before);
    q.set('limit', String(limit));
    return `/api/events/${this.event}/chat/${room}/messages?${q}`;
  }

  state(text, cls = '') {
    say(this.els.status, text, cls);
    this.onState(text, cls);
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    let opened = false;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    this.state(this.retries ? 'Reconnecting\u2026' : 'Connecting\u2026');

    ws.addEventListener('open', () => {
      opened = true;
    });
    ws.addEventListener('message', (e) => {
      if (ws !== this.ws) return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      this.frame(f);
    });
    ws.addEventListener('close', async (e) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.els.form?.setAttribute('aria-disabled', 'true');
      if (this.stopped) return;
      if (!opened) {
        // Refused before the 101, or the server is not reachable: ask why.
        try {
          await api(this.historyPath(this.joined || this.room, null, 1));
        } catch (err) {
          if ([401, 403, 404].includes(err.status)) {
            this.state(err.message, 'bad');
            this.onFrame({ type: 'refused', status: err.status, message: err.message });
            return;
          }
        }
      }
      this.retry(e.code);
    });
  }

  retry(code) {
    const delay = Math.min(30, 2 ** this.retries) * 1000 * (0.8 + Math.random() * 0.4);
    this.retries = Math.min(this.retries + 1, 6);
    const why = code === 1001 ? 'The server restarted.' : 'The connection was lost.';
    this.state(`${why} Reconnecting in ${Math.round(delay / 1000)} s\u2026`, 'bad');
    this.timer = setTimeout(() => this.connect(), delay);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try { ws.close(1000); } catch { /* closing anyway */ }
    }
  }

  switchRoom(room) {
    this.close();
    this.room = room;
    this.joined = null;
    this.retries = 0;
    this.items.clear();
    this.oldest = null;
    this.els.log.replaceChildren();
    this.connect();
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.joined) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  frame(f) {
    switch (f.type) {
    case 'welcome':
      this.welcome(f);
      break;
    case 'message':
      this.add(f);
      this.scroll();
      break;
    case 'presence':
      this.presence(f);
      break;
    case 'error':
      say(this.els.error, ERRORS[f.code] || sentenceOf(f.message)
          || 'The server did not accept this.', 'bad');
      break;
    default:
      break;
    }
    this.onFrame(f);
  }

  welcome(f) {
    this.retries = 0;
    this.joined = f.room || this.room;
    this.me = f.user || null;
    this.els.form?.removeAttribute('aria-disabled');
    this.state('Connected.', 'ok');
    for (const m of f.messages || []) this.add(m);
    if (this.els.older) this.els.older.hidden = this.oldest == null || this.oldest <= 1;
    this.present = Array.isArray(f.present) ? new Map() : null;
    for (const u of f.present || []) {
      const p = this.present.get(u.id);
      if (p) p.n += 1;
      else this.present.set(u.id, { user: u, n: 1 });
    }
    this.setCount(f.count);
    this.scroll();
  }

  presence(f) {
    const u = f.joined || f.left;
    if (!u) {
      // a big room's summary (count, users, no name): the list can no
      // longer be kept; only the count is shown from now on
      this.present = null;
      this.setCount(f.count);
      return;
    }
    if (this.present && u) {
      const p = this.present.get(u.id);
      if (f.joined) {
        if (p) p.n += 1;
        else this.present.set(u.id, { user: u, n: 1 });
      } else if (p && --p.n <= 0) {
        this.present.delete(u.id);
      }
    }
    if (u && (!this.me || u.id !== this.me.id)) {
      this.els.log.append(el('li', { class: 'notice' },
        `${userName(u)} ${f.joined ? 'joined' : 'left'}.`));
      this.scroll();
    }
    this.setCount(f.count);
  }

  setCount(n) {
    if (typeof n === 'number') this.count = n;
    const { count, present } = this.els;
    if (count) {
      count.textContent = `${this.count} ${this.count === 1 ? 'person' : 'people'} here`;
      count.dataset.count = String(this.count);
    }
    if (present) {
      present.hidden = !this.present;
      present.replaceChildren(...[...(this.present || new Map()).values()]
        .map(({ user }) => el('li', { 'data-user': user.id },
          user.avatar && /^(https?:\/\/|\/)/.test(user.avatar)
            ? el('img', { src: user.avatar, alt: '', class: 'avatar' }) : null,
          userName(user) + (this.me && user.id === this.me.id ? ' (you)' : ''))));
    }
  }

  // A message in id order; one already shown is skipped (history after a
  // reconnect overlaps what was live).
  add(m) {
    if (m.id == null || this.items.has(m.id)) return;
    const mine = this.me && m.sender && m.sender.id === this.me.id;
    const li = el('li', { class: `msg${mine ? ' mine' : ''}`, 'data-id': m.id },
      el('span', { class: 'who' }, userName(m.sender)),
      ' ',
      el('time', { datetime: m.time || '', class: 'muted' }, timeOf(m.time)),
      el('p', { class: 'text' }, String(m.text ?? '')));
    let before = null;
    for (const [id, item] of this.items) {
      if (id > m.id && (!before || id < Number(before.dataset.id))) before = item;
    }
    if (before) before.before(li);
    else this.els.log.append(li);
    this.items.set(m.id, li);
    if (this.oldest == null || m.id < this.oldest) this.oldest = m.id;
  }

  async loadOlder() {
    const b = this.els.older;
    if (!this.joined || this.oldest == null) return;
    b.disabled = true;
    try {
      const r = await api(this.historyPath(this.joined, this.oldest));
      const top = this.els.log.firstChild;
      for (const m of r.messages || []) this.add(m);
      b.hidden = !r.more;
      top?.scrollIntoView?.({ block: 'start' });
    } catch (err) {
      say(this.els.error, err.message, 'bad');
    } finally {
      b.disabled = false;
    }
  }

  scroll() {
    const log = this.els.log;
    log.scrollTop = log.scrollHeight;
  }
}

function sentenceOf(s) {
  const t = String(s || '').trim();
  if (!t) return '';
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}
