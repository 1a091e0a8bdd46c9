#!/usr/bin/env python3
"""A reference lift client: enrols, sends readings, replays its backlog.

Documentation for lift firmware teams (docs/telemetry.md) and the client
t/122-lifts-outage.t runs.  Standard library only (MessagePack encoded
below: the few types a reading needs).

    lift_client.py --url http://127.0.0.1:8080 --serial SN-1 \\
        --state /var/lib/lift [--interval 10] [--count N] [--batch 50]
        [--json] [--deadline SECONDS]

Enrolment (RFC 8628): without a token in STATE/token the client asks for a
device code, writes the user code to STATE/user_code (and prints it), and
polls the token endpoint at the interval the server gives, 5 s slower after
each slow_down, until it gets the token (stored in STATE/token) or
access_denied / expired_token (exit 3).

Readings: one every INTERVAL seconds (a status reading with the cumulative
counters; COUNT of them, then the client drains its backlog and exits).
Every reading gets the next seq and the device time in milliseconds when it
is made, and both are kept with it: a reading sent again must carry the
same seq AND ts, so the server can tell it is a duplicate.  The backlog
(STATE/backlog, one JSON reading a line) holds what is not acknowledged
yet; after an outage (connection refused, 503/429, timeouts) it is sent
again oldest first, BATCH readings per request.  A reading is dropped from
the backlog only when a 200 answer counted it (accepted, duplicate, or
refused as invalid: an invalid reading will never be accepted).  Each
acknowledged reading is appended to STATE/acked as "seq ts outcome".
401: the token was revoked; the client stops (exit 4).
"""

import argparse
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request


def msgpack(v):
    """MessagePack of None, bool, int, float, str, list, dict."""
    if v is None:
        return b'\xc0'
    if v is True:
        return b'\xc3'
    if v is False:
        return b'\xc2'
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if v >= 0:
            return b'\xcf' + struct.pack('>Q', v)
        if v >= -32:
            return struct.pack('>b', v)
        return b'\xd3' + struct.pack('>q', v)
    if isinstance(v, float):
        return b'\xcb' + struct.pack('>d', v)
    if isinstance(v, str):
        b = v.encode('utf-8')
        n = len(b)
        if n < 32:
            return bytes([0xa0 | n]) + b
        if n < 256:
            return b'\xd9' + bytes([n]) + b
        return b'\xda' + struct.pack('>H', n) + b
    if isinstance(v, (list, tuple)):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else b'\xdc' + struct.pack('>H', n)
        return head + b''.join(msgpack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b'\xde' + struct.pack('>H', n)
        return head + b''.join(msgpack(k) + msgpack(x) for k, x in v.items())
    raise TypeError(type(v))


def post(url, body, token=None, kind='json', timeout=10):
    """(status, headers, decoded JSON or None); status 0: no answer."""
    data = msgpack(body) if kind == 'msgpack' else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method='POST')
    req.add_header('Content-Type', 'application/msgpack' if kind == 'msgpack'
                   else 'application/json')
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, json.loads(r.read() or b'null')
    except urllib.error.HTTPError as e:
        try:
            payload = json.loads(e.read() or b'null')
        except ValueError:
            payload = None
        return e.code, e.headers, payload
    except (OSError, ValueError):
        return 0, {}, None


class Lift:
    def __init__(self, a):
        self.a = a
        os.makedirs(a.state, exist_ok=True)
        self.path = lambda name: os.path.join(a.state, name)
        self.backlog = []
        if os.path.exists(self.path('backlog')):
            with open(self.path('backlog')) as f:
                self.backlog = [json.loads(x) for x in f if x.strip()]
        self.seq = max([r['seq'] for r in self.backlog] + [self.read_int('seq')])
        self.trips = self.read_int('trips')

    def read_int(self, name):
        try:
            with open(self.path(name)) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def write(self, name, text):
        tmp = self.path(name + '.tmp')
        with open(tmp, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(name))

    def save_backlog(self):
        self.write('backlog', ''.join(json.dumps(r) + '\n'
                                      for r in self.backlog))

    # ------------------------------------------------------- enrolment

    def token(self):
        if os.path.exists(self.path('token')):
            with open(self.path('token')) as f:
                return f.read().strip()

        status, _, d = post(self.a.url + '/api/devices/authorize',
                            {'serial': self.a.serial})
        if status != 200:
            sys.exit('authorize: %s %s' % (status, d))

        self.write('user_code', d['user_code'] + '\n')
        print('enter %s at %s' % (d['user_code'], d['verification_uri']),
              flush=True)

        interval = d['interval']
        deadline = time.time() + d['expires_in']
        while time.time() < deadline:
            time.sleep(interval)
            status, _, r = post(self.a.url + '/api/devices/token',
                                {'device_code': d['device_code']})
            if status == 200:
                self.write('token', r['access_token'] + '\n')
                return r['access_token']
            err = (r or {}).get('error')
            if err == 'slow_down':
                interval += 5
            elif err in ('access_denied', 'expired_token', 'invalid_grant'):
                print('enrolment ended: %s' % err, flush=True)
                sys.exit(3)
            # authorization_pending, or no answer: poll again
        sys.exit(3)

    # ------------------------------------------------------- readings

    def make_reading(self):
        self.seq += 1
        self.trips += 1
        r = {'seq': self.seq, 'ts': int(time.time() * 1000),
             'kind': 'status', 'floor_from': 0, 'floor_to': 0,
             'temperature': 21.5, 'counters': {'trips': self.trips}}
        self.backlog.append(r)
        self.save_backlog()           # kept before it is sent
        self.write('seq', str(self.seq))
        self.write('trips', str(self.trips))

    def send(self, token):
        """Sends the oldest BATCH readings: seconds to wait before the
        next try (0: sent)."""
        batch = self.backlog[:self.a.batch]
        status, headers, d = post(self.a.url + '/api/ingest', batch, token,
                                  'json' if self.a.json else 'msgpack')
        if status == 401:
            print('the device token was refused (revoked?)', flush=True)
            sys.exit(4)
        if status != 200:
            # 0 (no answer), 503, 429: keep everything, try again later
            try:
                return max(1.0, float(headers.get('Retry-After', 1)))
            except (TypeError, ValueError):
                return 1.0

        bad = {e['index']: e for e in d.get('errors', [])}
        with open(self.path('acked'), 'a') as f:
            for i, r in enumerate(batch):
                f.write('%d %d %s\n' % (r['seq'], r['ts'],
                                        'invalid' if i in bad else 'ok'))
        del self.backlog[:len(batch)]
        self.save_backlog()
        return 0

    def run(self):
        token = self.token()
        made = 0
        next_reading = time.time()
        retry_at = 0.0
        deadline = time.time() + self.a.deadline
        while time.time() < deadline:
            now = time.time()
            if made < self.a.count and now >= next_reading:
                self.make_reading()
                made += 1
                next_reading += self.a.interval
            if self.backlog and now >= retry_at:
                wait = self.send(token)
                if wait:
                    retry_at = time.time() + wait
                continue
            if made >= self.a.count and not self.backlog:
                return 0
            time.sleep(max(0.01, min(next_reading, retry_at or next_reading)
                           - time.time()))
        return 5


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--url', required=True)
    p.add_argument('--serial', required=True)
    p.add_argument('--state', required=True)
    p.add_argument('--interval', type=float, default=10.0)
    p.add_argument('--count', type=int, default=sys.maxsize)
    p.add_argument('--batch', type=int, default=50)
    p.add_argument('--json', action='store_true')
    p.add_argument('--deadline', type=float, default=float('inf'))
    sys.exit(Lift(p.parse_args()).run())


if __name__ == '__main__':
    main()
