#!/usr/bin/python3
"""SMTP sink for the tests: accepts every message on 127.0.0.1:PORT and
writes it to DIR.

Each message becomes two files named after the time it arrived (so sorting
the names sorts by arrival), written under a temporary name and renamed:

    DIR/<ns>-<n>.eml    the message as received (CRLF line ends, the
                        transparency dots removed)
    DIR/<ns>-<n>.json   {"mail_from", "rcpt_tos", "received" (unix time),
                        "peer", "auth"}

Behaviour can be changed while it runs, through files in DIR:

    DIR/.reply          if present, its first line is the reply to the end
                        of DATA instead of "250 OK" (e.g. "451 4.3.0 busy"),
                        and the message is not stored

Options: --port, --dir, --host (default 127.0.0.1), --delay SECONDS before
the reply to DATA, --auth USER:PASSWORD (then AUTH is required),
--tls-cert FILE --tls-key FILE with --tls starttls (offered, and required
before MAIL) or --tls implicit (SMTPS: TLS from the first byte).  The
.json of a message then has "tls": true when it came over TLS.

Uses Debian's python3-aiosmtpd.  Stops on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time

from aiosmtpd.smtp import SMTP, AuthResult


class Sink:
    def __init__(self, directory, delay):
        self.dir = directory
        self.delay = delay
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)

        try:
            with open(os.path.join(self.dir, '.reply')) as f:
                reply = f.readline().strip()
            if reply:
                return reply
        except FileNotFoundError:
            pass

        self.n += 1
        name = '%d-%06d' % (time.time_ns(), self.n)

        meta = {
            'mail_from': envelope.mail_from,
            'rcpt_tos': list(envelope.rcpt_tos),
            'received': time.time(),
            'peer': session.peer[0] if session.peer else None,
            'auth': session.authenticated,
            'tls': (session.ssl is not None
                    or server.transport.get_extra_info('ssl_object')
                    is not None),
        }

        for ext, data in (('.eml', envelope.original_content),
                          ('.json', json.dumps(meta).encode())):
            tmp = os.path.join(self.dir, '.tmp-' + name + ext)
            with open(tmp, 'wb') as f:
                f.write(data)
            os.rename(tmp, os.path.join(self.dir, name + ext))

        return '250 OK: queued as ' + name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--dir', required=True)
    ap.add_argument('--delay', type=float, default=0)
    ap.add_argument('--auth')
    ap.add_argument('--tls', choices=['starttls', 'implicit'])
    ap.add_argument('--tls-cert')
    ap.add_argument('--tls-key')
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    handler = Sink(args.dir, args.delay)
    kw = {}

    if args.auth:
        user, password = args.auth.split(':', 1)

        def authenticator(server, session, envelope, mechanism, data):
            ok = (data.login.decode() == user
                  and data.password.decode() == password)
            return AuthResult(success=ok, handled=False)

        kw = dict(authenticator=authenticator, auth_required=True,
                  auth_require_tls=False)

    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)

    if args.tls == 'starttls':
        kw.update(tls_context=ctx, require_starttls=True)

    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname='sink.test', loop=loop, **kw),
        host=args.host, port=args.port, reuse_address=True,
        ssl=ctx if args.tls == 'implicit' else None))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)

    print('ready', args.port, flush=True)

    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    return 0


if __name__ == '__main__':
    sys.exit(main())
