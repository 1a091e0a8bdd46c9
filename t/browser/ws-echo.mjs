// ws-echo.mjs PAGE FOREIGN_PAGE WS_BASE: Chromium's own WebSocket against
// platform_websocket.
//
// Opens PAGE (a page of the same origin as WS_BASE) in headless Chromium
// and runs, in the page: text and 60 KB binary echoes, a burst of 200
// messages, a clean close, an idle connection kept alive by the browser's
// automatic pongs (WS_BASE/ws-keep), and a message over the limit
// (WS_BASE/ws-small).  Then opens FOREIGN_PAGE (another origin) and tries
// WS_BASE/ws from there, which the server must refuse.  Prints one JSON
// line; t/81-websocket-interop.t judges it.  Bounded: killed after 60 s.

import { launch } from './chromium.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [page_url, foreign_url, base] = process.argv.slice(2);
if (!base) {
  console.error('usage: node ws-echo.mjs PAGE FOREIGN_PAGE ws://127.0.0.1:PORT');
  process.exit(2);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'platform-chromium-'));

const watchdog = setTimeout(() => {
  console.error('ws-echo.mjs: timed out after 60 s');
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, 60000);

// runs in the page
async function session(base) {
  const open = (url) => new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const queue = [];
    const waiting = [];
    ws.opened = false;
    ws.onmessage = (e) => {
      if (waiting.length) waiting.shift()(e.data);
      else queue.push(e.data);
    };
    ws.next = () => new Promise((res) => {
      if (queue.length) res(queue.shift());
      else waiting.push(res);
    });
    ws.closed = new Promise((res) => {
      ws.onclose = (e) => res({ code: e.code, reason: e.reason, clean: e.wasClean });
    });
    ws.onopen = () => { ws.opened = true; resolve(ws); };
    ws.closed.then(() => resolve(ws));
  });

  const r = {};
  let ws = await open(`${base}/ws`);
  r.opened = ws.opened;
  r.extensions = ws.extensions;
  r.protocol = ws.protocol;

  ws.send('h\u00e9llo w\u00f6rld \u2603 \u{1f600}');
  r.text = await ws.next();

  const data = new Uint8Array(60 * 1024);
  crypto.getRandomValues(data);
  ws.send(data);
  const got = new Uint8Array(await ws.next());
  r.binary_60k = got.length === data.length && got.every((b, i) => b === data[i]);

  const burst = Array.from({ length: 200 }, (_, i) => `m${i}`);
  burst.forEach((b) => ws.send(b));
  const echoed = [];
  for (let i = 0; i < burst.length; i++) echoed.push(await ws.next());
  r.burst_in_order = JSON.stringify(echoed) === JSON.stringify(burst);

  ws.close(1000, 'done');
  r.close = await ws.closed;

  ws = await open(`${base}/ws-keep`);
  await new Promise((res) => setTimeout(res, 1500));
  ws.send('after 1.5 s');
  r.kept_alive = (await ws.next()) === 'after 1.5 s';
  ws.close(1000);
  await ws.closed;

  ws = await open(`${base}/ws-small`);
  ws.send('x'.repeat(1001));
  r.too_big = await ws.closed;

  return r;
}

async function foreign(base) {
  const ws = new WebSocket(`${base}/ws`);
  let opened = false;
  ws.onopen = () => { opened = true; };
  const e = await new Promise((res) => { ws.onclose = res; });
  return { opened, code: e.code };
}

const result = { console: [] };
let context;
let ok = false;

try {
  context = await launch(userDataDir);
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => result.console.push(msg.text()));
  page.on('pageerror', (err) => result.console.push(`pageerror: ${err.message}`));

  await page.goto(page_url, { waitUntil: 'load', timeout: 20000 });
  result.same_origin = await page.evaluate(session, base);

  await page.goto(foreign_url, { waitUntil: 'load', timeout: 20000 });
  result.foreign_origin = await page.evaluate(foreign, base);

  ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}

console.log(JSON.stringify(result));
process.exit(ok ? 0 : 1);
