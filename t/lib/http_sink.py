#!/usr/bin/python3
"""HTTP webhook receiver for the tests, on 127.0.0.1:PORT.

Every request is answered and written to DIR, named after the time it
arrived (sorting the names sorts by arrival), under a temporary name and
renamed:

    DIR/<ns>-<n>.json   {"method", "path", "headers" (a list of [name,
                        value]), "body" (text, UTF-8), "received" (unix
                        time), "verified" (see --secret), "status"}

The answer is 200 unless DIR/.status holds another status, with the body
{"received":true} unless DIR/.reply holds another (its bytes, sent as
application/json; both may be changed while the sink runs).  With
--secret, the X-Platform-Signature header (t=<unix>,v1=<hex HMAC-SHA256
of "<t>.<body>">) is verified the way a receiver would (constant-time
compare, 300 s tolerance): a request that fails is answered 400 and
recorded with "verified": false.

Options: --port, --dir, --host (default 127.0.0.1), --secret, --delay
SECONDS before answering, --tls-cert FILE --tls-key FILE (HTTPS).  Stops
on SIGTERM or SIGINT.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import ssl
import sys
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify(secret, header, body):
    if not header:
        return False

    parts = {}
    sigs = []
    for item in header.split(','):
        k, _, v = item.strip().partition('=')
        if k == 'v1':
            sigs.append(v)
        else:
            parts[k] = v

    try:
        ts = int(parts.get('t', ''))
    except ValueError:
        return False

    if abs(time.time() - ts) > 300:
        return False

    mac = hmac.new(secret.encode(), str(ts).encode() + b'.' + body,
                   hashlib.sha256).hexdigest()

    return any(hmac.compare_digest(mac, s) for s in sigs)


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    counter = 0
    lock = threading.Lock()

    def handle_any(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''

        if self.server.delay:
            time.sleep(self.server.delay)

        status = 200
        try:
            with open(os.path.join(self.server.dir, '.status')) as f:
                status = int(f.readline().strip() or 200)
        except (FileNotFoundError, ValueError):
            pass

        verified = None
        if self.server.secret is not None:
            verified = verify(self.server.secret,
                              self.headers.get('X-Platform-Signature'), body)
            if not verified:
                status = 400

        with Handler.lock:
            Handler.counter += 1
            name = '%d-%06d' % (time.time_ns(), Handler.counter)

        rec = {
            'method': self.command,
            'path': self.path,
            'headers': [[k, v] for k, v in self.headers.items()],
            'body': body.decode('utf-8', 'replace'),
            'received': time.time(),
            'verified': verified,
            'status': status,
        }

        tmp = os.path.join(self.server.dir, '.tmp-' + name + '.json')
        with open(tmp, 'w') as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(self.server.dir, name + '.json'))

        reply = b'{"received":true}'
        try:
            with open(os.path.join(self.server.dir, '.reply'), 'rb') as f:
                reply = f.read()
        except FileNotFoundError:
            pass

        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = handle_any
    do_PUT = handle_any
    do_GET = handle_any
    do_PATCH = handle_any
    do_DELETE = handle_any

    def log_message(self, fmt, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--dir', required=True)
    ap.add_argument('--secret')
    ap.add_argument('--delay', type=float, default=0)
    ap.add_argument('--tls-cert')
    ap.add_argument('--tls-key')
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.dir = args.dir
    server.secret = args.secret
    server.delay = args.delay

    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)

    def stop(sig, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print('ready', args.port, flush=True)
    server.serve_forever()
    server.server_close()

    return 0


if __name__ == '__main__':
    sys.exit(main())
