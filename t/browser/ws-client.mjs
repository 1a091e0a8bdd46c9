// ws-client.mjs BASE: npm's ws (Node) against platform_websocket.
//
// BASE is ws://127.0.0.1:PORT; uses BASE/ws (echo), BASE/ws-keep (short
// ping interval and idle timeout) and BASE/ws-small (1000-byte limit).
// Prints one JSON line of what it saw; t/81-websocket-interop.t judges it.
// ws offers permessage-deflate by default; the server does not take it.
// Bounded: the whole run is killed after 60 s.

import WebSocket from 'ws';
import { randomBytes } from 'node:crypto';

const base = process.argv[2];
if (!base) {
  console.error('usage: node ws-client.mjs ws://127.0.0.1:PORT');
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error('ws-client.mjs: timed out after 60 s');
  process.exit(1);
}, 60000);

function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const queue = [];
    const waiting = [];
    ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      if (waiting.length) waiting.shift()(m);
      else queue.push(m);
    });
    ws.next = () => new Promise((res) => {
      if (queue.length) res(queue.shift());
      else waiting.push(res);
    });
    ws.closed = new Promise((res) => ws.on('close', (code, reason) =>
      res({ code, reason: reason.toString() })));
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const result = {};

let ws = await open(`${base}/ws`);
result.extensions = ws.extensions;

ws.send('h\u00e9llo w\u00f6rld \u2603 \u{1f600}');
let m = await ws.next();
result.text = m.isBinary ? null : m.data.toString();

const data = randomBytes(60 * 1024);
ws.send(data);
m = await ws.next();
result.binary_60k = m.isBinary && Buffer.compare(m.data, data) === 0;

ws.send('frag', { fin: false });
ws.send('ment', { fin: false });
ws.send('ed \u2713', { fin: true });
m = await ws.next();
result.fragmented_text = m.data.toString();

const pong = new Promise((res) => ws.once('pong', (p) => res(p.toString())));
ws.ping('are you there');
result.ping = await pong;

const burst = Array.from({ length: 200 }, (_, i) => `m${i}`);
burst.forEach((b) => ws.send(b));
const got = [];
for (let i = 0; i < burst.length; i++) got.push((await ws.next()).data.toString());
result.burst_in_order = JSON.stringify(got) === JSON.stringify(burst);

ws.close(1000, 'done');
result.close = await ws.closed;

// ws answers the server's pings by itself: an idle client outlives the
// idle timeout
ws = await open(`${base}/ws-keep`);
let pings = 0;
ws.on('ping', () => { pings++; });
await new Promise((res) => setTimeout(res, 1500));
ws.send('after 1.5 s');
result.kept_alive = (await ws.next()).data.toString() === 'after 1.5 s';
result.server_pings = pings;
ws.close(1000);
await ws.closed;

ws = await open(`${base}/ws-small`);
ws.send(Buffer.alloc(1001, 0x78));
result.too_big = (await ws.closed).code;

clearTimeout(watchdog);
console.log(JSON.stringify(result));
