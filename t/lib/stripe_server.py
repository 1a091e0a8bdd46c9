#!/usr/bin/python3
"""A local server speaking the part of Stripe's wire format the platform
uses, for the tests and `make run` (a test fixture, not part of the
product).  Listens on 127.0.0.1:PORT.

API (form-encoded requests, JSON answers, errors shaped as Stripe's
{"error": {"type": "invalid_request_error", "message": ...}}):

    POST /v1/checkout/sessions            a Checkout Session (mode payment,
                                          line_items with price_data,
                                          success_url required; expires_at
                                          30 min to 24 h ahead; an
                                          Idempotency-Key gives the same
                                          session again)
    GET  /v1/checkout/sessions/{id}
    POST /v1/checkout/sessions/{id}/expire   -> checkout.session.expired
    POST /v1/refunds                      payment_intent of a paid session
    GET  /v1/refunds/{id}

Every /v1 request needs "Authorization: Bearer <--key>" (401 otherwise).

Hosted payment page (what a participant's browser sees):

    GET  /pay/{id}     the amount and a "Pay" button
    POST /pay/{id}     pays: the session becomes complete/paid, the event
                       checkout.session.completed is sent to --webhook-url
                       signed as Stripe signs (Stripe-Signature: t=<unix>,
                       v1=<hex HMAC-SHA256 of "<t>.<body>" under
                       --webhook-secret>), then 303 to success_url with
                       {CHECKOUT_SESSION_ID} replaced

Control (for tests):

    DIR/.fail_next, or POST /_control/fail-next?status=N
                       the next session create answers status N
    DIR/.webhook_url   if present, its first line replaces --webhook-url
                       ("off" sends no webhooks)

Records, written under a temporary name and renamed (sorting the names
sorts by arrival):

    DIR/<ns>-<n>.json           each request: {"method", "path",
                                "headers" ([name, value]...), "body",
                                "form" (flat, as sent), "received",
                                "status"}
    DIR/webhooks/<ns>-<n>.json  each event sent: {"id", "type", "url",
                                "body" (exact text), "signature" (the
                                header), "status", "response", "sent"}

Options: --port, --dir, --host (default 127.0.0.1), --key (default
sk_test_platform) or --key-file, --webhook-url, --webhook-secret (default
whsec_platform_test) or --webhook-secret-file.  Stops on SIGTERM or
SIGINT.
"""

import argparse
import hashlib
import hmac
import html
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def new_id(prefix):
    return prefix + secrets.token_hex(12)


def parse_form(pairs):
    """Stripe's nested-bracket form keys -> nested dicts and lists:
    a[0][b]=x -> {"a": [{"b": "x"}]}."""
    root = {}
    for key, value in pairs:
        m = re.fullmatch(r'([^\[\]]+)((?:\[[^\[\]]*\])*)', key)
        path = ([m.group(1)] + re.findall(r'\[([^\[\]]*)\]', m.group(2))
                if m else [key])
        node = root
        for i, p in enumerate(path):
            last = i == len(path) - 1
            want = None if last else ([] if path[i + 1].isdigit() else {})
            if isinstance(node, list):
                if not p.isdigit():
                    break
                idx = int(p)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                elif not isinstance(node[idx], type(want)):
                    node[idx] = want
                node = node[idx]
            else:
                if last:
                    node[p] = value
                elif not isinstance(node.get(p), type(want)):
                    node[p] = want
                node = node[p]
    return root


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.sessions = {}
        self.intents = {}
        self.refunds = {}
        self.idem = {}
        self.counter = 0
        self.fail_next = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    # ------------------------------------------------------------ plumbing

    def log_message(self, fmt, *args):
        pass

    def name(self):
        st = self.server.state
        with st.lock:
            st.counter += 1
            return '%d-%06d' % (time.time_ns(), st.counter)

    def write_record(self, subdir, rec):
        d = self.server.dir if not subdir else os.path.join(self.server.dir,
                                                            subdir)
        name = self.name()
        tmp = os.path.join(d, '.tmp-' + name + '.json')
        with open(tmp, 'w') as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(d, name + '.json'))

    def send(self, status, obj=None, ctype='application/json', body=None,
             headers=()):
        if body is None:
            body = json.dumps(obj, indent=2).encode()
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Request-Id', new_id('req_'))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        self.status_sent = status

    def error(self, status, message, etype='invalid_request_error',
              param=None):
        err = {'type': etype, 'message': message}
        if param:
            err['param'] = param
        self.send(status, {'error': err})

    def handle_any(self):
        n = int(self.headers.get('Content-Length') or 0)
        self.raw = self.rfile.read(n) if n else b''
        self.status_sent = 0
        url = urllib.parse.urlsplit(self.path)
        self.route = url.path
        self.query = url.query
        text = self.raw.decode('utf-8', 'replace')
        self.pairs = urllib.parse.parse_qsl(
            text if self.command == 'POST' else url.query,
            keep_blank_values=True)

        try:
            self.dispatch()
        except Exception as e:  # a bug here: say so, as Stripe would 500
            if not self.status_sent:
                self.error(500, 'fixture error: %r' % (e,), 'api_error')

        if not self.route.startswith('/_control/'):
            self.write_record(None, {
                'method': self.command,
                'path': self.path,
                'headers': [[k, v] for k, v in self.headers.items()],
                'body': text,
                'form': dict(self.pairs),
                'received': time.time(),
                'status': self.status_sent,
            })

    do_GET = handle_any
    do_POST = handle_any
    do_HEAD = handle_any

    def dispatch(self):
        r = self.route
        m = self.command

        if r.startswith('/v1/'):
            auth = self.headers.get('Authorization') or ''
            if not hmac.compare_digest(auth, 'Bearer ' + self.server.key):
                return self.error(401, 'Invalid API Key provided.')

        if m == 'POST' and r == '/v1/checkout/sessions':
            return self.idempotent(self.create_session)
        mm = re.fullmatch(r'/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)', r)
        if m in ('GET', 'HEAD') and mm:
            return self.get_session(mm.group(1))
        mm = re.fullmatch(r'/v1/checkout/sessions/(cs_[A-Za-z0-9_]+)/expire',
                          r)
        if m == 'POST' and mm:
            return self.idempotent(lambda: self.expire_session(mm.group(1)))
        if m == 'POST' and r == '/v1/refunds':
            return self.idempotent(self.create_refund)
        mm = re.fullmatch(r'/v1/refunds/(re_[A-Za-z0-9_]+)', r)
        if m in ('GET', 'HEAD') and mm:
            with self.server.state.lock:
                ref = self.server.state.refunds.get(mm.group(1))
            if not ref:
                return self.error(404, 'No such refund: ' + mm.group(1))
            return self.send(200, ref)

        mm = re.fullmatch(r'/pay/(cs_[A-Za-z0-9_]+)', r)
        if mm and m in ('GET', 'HEAD'):
            return self.pay_page(mm.group(1))
        if mm and m == 'POST':
            return self.pay(mm.group(1))

        if m == 'POST' and r == '/_control/fail-next':
            q = dict(urllib.parse.parse_qsl(self.query))
            with self.server.state.lock:
                self.server.state.fail_next = int(q.get('status', '400'))
            return self.send(200, {'fail_next': int(q.get('status', '400'))})

        if r.startswith('/v1/'):
            return self.error(404, 'Unrecognized request URL (%s: %s).'
                              % (m, r))
        return self.send(404, body=b'not found\n', ctype='text/plain')

    # ------------------------------------------------------------ idempotency

    def idempotent(self, fn):
        key = self.headers.get('Idempotency-Key')
        if not key:
            return fn()
        st = self.server.state
        scope = (self.route, key)
        with st.lock:
            seen = st.idem.get(scope)
        if seen:
            raw, status, body = seen
            if raw != self.raw:
                return self.error(400, 'Keys for idempotent requests can '
                                  'only be used with the same parameters '
                                  'they were first used with.',
                                  'idempotency_error')
            return self.send(status, body=body,
                             headers=[('Idempotent-Replayed', 'true')])
        self.captured = None
        orig = self.send

        def capture(status, obj=None, ctype='application/json', body=None,
                    headers=()):
            if body is None:
                body = json.dumps(obj, indent=2).encode()
            self.captured = (status, body)
            orig(status, obj, ctype, body, headers)

        self.send = capture
        try:
            fn()
        finally:
            self.send = orig
        # Stripe keeps the first answer, errors included, but not 5xx.
        if self.captured and self.captured[0] < 500:
            with st.lock:
                st.idem.setdefault(scope, (self.raw,) + self.captured)

    # ------------------------------------------------------------ sessions

    def fail_next(self):
        st = self.server.state
        f = os.path.join(self.server.dir, '.fail_next')
        status = None
        with st.lock:
            if st.fail_next is not None:
                status, st.fail_next = st.fail_next, None
            elif os.path.exists(f):
                try:
                    with open(f) as fh:
                        status = int(fh.readline().strip() or 400)
                except ValueError:
                    status = 400
                os.unlink(f)
        return status

    def create_session(self):
        status = self.fail_next()
        if status:
            return self.error(status, 'The fixture was told to fail this '
                              'request.', 'api_error' if status >= 500
                              else 'invalid_request_error')

        form = parse_form(self.pairs)
        now = int(time.time())

        if form.get('mode') != 'payment':
            return self.error(400, 'Missing required param: mode.', param='mode')
        if not form.get('success_url'):
            return self.error(400, 'Missing required param: success_url.',
                              param='success_url')
        items = form.get('line_items')
        if not isinstance(items, list) or not items:
            return self.error(400, 'Missing required param: line_items.',
                              param='line_items')

        total = 0
        currency = None
        lines = []
        for i, it in enumerate(items):
            pd = (it or {}).get('price_data') or {}
            try:
                amount = int(pd.get('unit_amount'))
                qty = int(it.get('quantity'))
            except (TypeError, ValueError):
                return self.error(400, 'Invalid integer: line_items[%d]' % i,
                                  param='line_items[%d]' % i)
            cur = pd.get('currency') or ''
            name = (pd.get('product_data') or {}).get('name')
            if not re.fullmatch(r'[a-z]{3}', cur) or not name or amount < 0 \
               or qty < 1:
                return self.error(400, 'Invalid line_items[%d]' % i,
                                  param='line_items[%d]' % i)
            if currency and cur != currency:
                return self.error(400, 'All line items must use the same '
                                  'currency.')
            currency = cur
            total += amount * qty
            lines.append({'name': name, 'unit_amount': amount,
                          'quantity': qty})

        expires_at = now + 24 * 3600
        if 'expires_at' in form:
            try:
                expires_at = int(form['expires_at'])
            except ValueError:
                return self.error(400, 'Invalid integer: expires_at',
                                  param='expires_at')
            if expires_at < now + 1800 or expires_at > now + 24 * 3600:
                return self.error(400, 'The `expires_at` timestamp must be '
                                  'between 30 minutes and 24 hours from '
                                  'Checkout Session creation.',
                                  param='expires_at')

        pid = form.get('payment_intent_data') or {}
        sid = 'cs_test_' + secrets.token_hex(16)
        base = 'http://%s:%d' % (self.server.server_address[0],
                                 self.server.server_address[1])
        s = {
            'id': sid,
            'object': 'checkout.session',
            'amount_subtotal': total,
            'amount_total': total,
            'cancel_url': form.get('cancel_url'),
            'client_reference_id': form.get('client_reference_id'),
            'created': now,
            'currency': currency,
            'customer_email': form.get('customer_email'),
            'expires_at': expires_at,
            'livemode': False,
            'metadata': form.get('metadata') or {},
            'mode': 'payment',
            'payment_intent': None,
            'payment_status': 'unpaid',
            'status': 'open',
            'success_url': form.get('success_url'),
            'url': base + '/pay/' + sid,
        }
        with self.server.state.lock:
            self.server.state.sessions[sid] = {
                'session': s, 'lines': lines,
                'transfer_data': pid.get('transfer_data') or {},
                'application_fee_amount': pid.get('application_fee_amount'),
                'pi_metadata': pid.get('metadata') or {},
            }
        return self.send(200, s)

    def session_of(self, sid):
        with self.server.state.lock:
            rec = self.server.state.sessions.get(sid)
        if rec and rec['session']['status'] == 'open' \
           and rec['session']['expires_at'] < time.time():
            self.expire(rec)
        return rec

    def get_session(self, sid):
        rec = self.session_of(sid)
        if not rec:
            return self.error(404, 'No such checkout.session: ' + sid,
                              param='session')
        return self.send(200, rec['session'])

    def expire(self, rec):
        s = rec['session']
        with self.server.state.lock:
            if s['status'] != 'open':
                return False
            s['status'] = 'expired'
        self.send_event('checkout.session.expired', dict(s))
        return True

    def expire_session(self, sid):
        rec = self.session_of(sid)
        if not rec:
            return self.error(404, 'No such checkout.session: ' + sid,
                              param='session')
        if not self.expire(rec):
            return self.error(400, 'Only Checkout Sessions with a status in '
                              '["open"] can be expired. This Checkout '
                              'Session has a status of "%s".'
                              % rec['session']['status'])
        return self.send(200, rec['session'])

    # ------------------------------------------------------------ paying

    def pay_page(self, sid):
        rec = self.session_of(sid)
        if not rec:
            return self.send(404, body=b'No such payment.\n',
                             ctype='text/plain')
        s = rec['session']
        amount = '%d.%02d %s' % (s['amount_total'] // 100,
                                 s['amount_total'] % 100,
                                 (s['currency'] or '').upper())
        items = ''.join('<li>%s &times; %d</li>'
                        % (html.escape(l['name']), l['quantity'])
                        for l in rec['lines'])
        if s['status'] == 'open':
            action = ('<form method="post"><button id="pay" type="submit">'
                      'Pay %s</button></form>' % html.escape(amount))
        else:
            action = ('<p id="closed">This checkout is %s.</p>'
                      % html.escape(s['status']))
        page = ('<!DOCTYPE html><html><head><meta charset="utf-8">'
                '<title>Pay %s (test)</title></head><body>'
                '<h1>Test payment</h1><ul>%s</ul>'
                '<p>Total: <b id="amount">%s</b></p>'
                '<p>Paying as %s</p>%s'
                '<p><a id="cancel" href="%s">Back</a></p></body></html>'
                % (html.escape(amount), items, html.escape(amount),
                   html.escape(s['customer_email'] or ''), action,
                   html.escape(s['cancel_url'] or '/')))
        return self.send(200, body=page.encode(),
                         ctype='text/html; charset=utf-8')

    def pay(self, sid):
        rec = self.session_of(sid)
        if not rec:
            return self.send(404, body=b'No such payment.\n',
                             ctype='text/plain')
        s = rec['session']
        st = self.server.state
        with st.lock:
            if s['status'] != 'open':
                status = s['status']
                s = None
            else:
                pi = 'pi_test_' + secrets.token_hex(12)
                s['status'] = 'complete'
                s['payment_status'] = 'paid'
                s['payment_intent'] = pi
                st.intents[pi] = {
                    'id': pi, 'amount': s['amount_total'],
                    'currency': s['currency'], 'status': 'succeeded',
                    'transfer_data': rec['transfer_data'],
                    'metadata': rec['pi_metadata'], 'refunded': 0,
                }
        if s is None:
            return self.send(400, body=('This checkout is %s.\n'
                                        % status).encode(),
                             ctype='text/plain')
        self.send_event('checkout.session.completed', dict(s))
        target = (s['success_url'] or '/').replace('{CHECKOUT_SESSION_ID}',
                                                   s['id'])
        return self.send(303, body=b'', ctype='text/plain',
                         headers=[('Location', target)])

    def create_refund(self):
        form = parse_form(self.pairs)
        pi = form.get('payment_intent')
        st = self.server.state
        with st.lock:
            intent = st.intents.get(pi or '')
            if not intent:
                err = 'No such payment_intent: ' + str(pi)
            elif intent['refunded'] >= intent['amount']:
                err = ('Charge for PaymentIntent %s has already been '
                       'refunded.' % pi)
            else:
                err = None
                amount = int(form.get('amount') or
                             intent['amount'] - intent['refunded'])
                intent['refunded'] += amount
                ref = {
                    'id': 're_test_' + secrets.token_hex(12),
                    'object': 'refund',
                    'amount': amount,
                    'currency': intent['currency'],
                    'payment_intent': pi,
                    'status': 'succeeded',
                    'reason': form.get('reason'),
                    'metadata': form.get('metadata') or {},
                    'reverse_transfer': form.get('reverse_transfer') == 'true',
                    'destination': intent['transfer_data'].get('destination'),
                    'created': int(time.time()),
                }
                st.refunds[ref['id']] = ref
        if err:
            return self.error(400, err, param='payment_intent')
        return self.send(200, ref)

    # ------------------------------------------------------------ webhooks

    def send_event(self, etype, obj):
        url = self.server.webhook_url
        f = os.path.join(self.server.dir, '.webhook_url')
        if os.path.exists(f):
            with open(f) as fh:
                url = fh.readline().strip()
        if not url or url == 'off':
            return None

        event = {
            'id': 'evt_' + secrets.token_hex(12),
            'object': 'event',
            'api_version': '2024-06-20',
            'created': int(time.time()),
            'data': {'object': obj},
            'livemode': False,
            'pending_webhooks': 1,
            'request': {'id': None, 'idempotency_key': None},
            'type': etype,
        }
        body = json.dumps(event, indent=2).encode()
        t = int(time.time())
        mac = hmac.new(self.server.webhook_secret.encode(),
                       str(t).encode() + b'.' + body,
                       hashlib.sha256).hexdigest()
        sig = 't=%d,v1=%s' % (t, mac)

        req = urllib.request.Request(url, data=body, method='POST', headers={
            'Content-Type': 'application/json; charset=utf-8',
            'Stripe-Signature': sig,
            'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        })
        status, response = 0, ''
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status = r.status
                response = r.read().decode('utf-8', 'replace')
        except urllib.error.HTTPError as e:
            status = e.code
            response = e.read().decode('utf-8', 'replace')
        except Exception as e:
            response = repr(e)

        self.write_record('webhooks', {
            'id': event['id'], 'type': etype, 'url': url,
            'body': body.decode(), 'signature': sig, 'status': status,
            'response': response, 'sent': time.time(),
        })
        return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--dir', required=True)
    ap.add_argument('--key', default='sk_test_platform')
    ap.add_argument('--key-file')
    ap.add_argument('--webhook-url')
    ap.add_argument('--webhook-secret', default='whsec_platform_test')
    ap.add_argument('--webhook-secret-file')
    args = ap.parse_args()

    # Files keep the secrets out of the process list (make run).
    if args.key_file:
        with open(args.key_file) as f:
            args.key = f.readline().strip()
    if args.webhook_secret_file:
        with open(args.webhook_secret_file) as f:
            args.webhook_secret = f.readline().strip()

    os.makedirs(os.path.join(args.dir, 'webhooks'), exist_ok=True)

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.dir = args.dir
    server.key = args.key
    server.webhook_url = args.webhook_url
    server.webhook_secret = args.webhook_secret
    server.state = State()

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
