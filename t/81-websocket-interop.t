#!/usr/bin/perl

# platform_websocket against clients people use: Debian's python3-websockets
# (t/lib/ws_interop.py), npm's ws in Node (t/browser/ws-client.mjs) and
# headless Chromium's own WebSocket (t/browser/ws-echo.mjs): echoes of text,
# a 60 KB binary message and fragmented messages, pings, an idle client
# kept alive by its automatic pongs, a message over the limit (1009), the
# permessage-deflate offer left unanswered, and a page of another origin
# refused.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Test::Platform;

my $PYTHON = '/usr/bin/python3';
my $CHROMIUM = $ENV{PLATFORM_CHROMIUM} || '/usr/bin/chromium';

my $t = Test::Platform->new(workers => 1);
my $root = $t->root;
my $browser = "$root/t/browser";

$t->http_conf(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;

        location = /ws { platform_websocket echo; }

        location = /ws-keep {
            platform_websocket echo;
            platform_websocket_ping_interval 200ms;
            platform_websocket_idle_timeout 700ms;
        }

        location = /ws-small {
            platform_websocket echo;
            platform_websocket_max_message_size 1000;
            platform_websocket_send_buffer 4k;
        }

        location = /ws-page {
            default_type text/html;
            return 200 '<!doctype html><title>ws</title>';
        }

        location = /status { platform_status; }
    }

    # another origin
    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /ws-page {
            default_type text/html;
            return 200 '<!doctype html><title>elsewhere</title>';
        }
    }
EOF

$t->run;

my $base = 'ws://127.0.0.1:' . $t->port;
my $text = "h\x{e9}llo w\x{f6}rld \x{2603} \x{1f600}";

sub run_json {
    my ($name, @cmd) = @_;

    my ($rc, $out, $err) = $t->_capture(\@cmd, timeout => 90);
    my ($line) = $out =~ /^(\{.*\})\s*$/m;
    my $res = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

    is($rc, 0, "$name finished") or diag("$out$err");
    ok($res, "$name reported") or diag("$out$err");

    return $res || {};
}

# --- python3-websockets ---------------------------------------------------

SKIP: {
    skip 'python3-websockets not installed (make deps installs it)', 12
        unless system($PYTHON, '-c', 'import websockets') == 0;

    my $r = run_json('python websockets', $PYTHON, "$root/t/lib/ws_interop.py",
                     $base);

    is_deeply($r->{extensions}, [], 'python: permessage-deflate not taken');
    is($r->{text}, $text, 'python: text echoed');
    ok($r->{binary_60k}, 'python: 60 KB binary echoed');
    is($r->{fragmented_text}, "fragmented \x{2713}",
       'python: fragmented text echoed whole');
    ok($r->{fragmented_binary}, 'python: fragmented binary echoed whole');
    ok($r->{ping}, 'python: ping answered');
    ok($r->{burst_in_order}, 'python: 200 messages echoed in order');
    is($r->{close_code}, 1000, 'python: clean close 1000');
    ok($r->{kept_alive}, 'python: idle past the idle timeout, kept by pongs');
    is($r->{too_big}, 1009, 'python: over the limit closed with 1009');
    diag("python3-websockets $r->{version}") if $r->{version};
}

# --- npm ws ---------------------------------------------------------------

# ws comes from t/browser/package-lock.json (make deps runs npm ci)
unless (-d "$browser/node_modules/ws"
        && -d "$browser/node_modules/playwright-core")
{
    my $out = `cd '$browser' && npm ci --no-audit --no-fund 2>&1`;
    die "npm ci in t/browser failed:\n$out" if $?;
}

{
    my $r = run_json('node ws', 'node', "$browser/ws-client.mjs", $base);

    is($r->{extensions}, '', 'ws: permessage-deflate not taken');
    is($r->{text}, $text, 'ws: text echoed');
    ok($r->{binary_60k}, 'ws: 60 KB binary echoed');
    is($r->{fragmented_text}, "fragmented \x{2713}",
       'ws: fragmented text echoed whole');
    is($r->{ping}, 'are you there', 'ws: ping answered with its payload');
    ok($r->{burst_in_order}, 'ws: 200 messages echoed in order');
    is_deeply($r->{close}, { code => 1000, reason => '' },
              'ws: clean close 1000');
    ok($r->{kept_alive}, 'ws: idle past the idle timeout, kept by pongs');
    ok(($r->{server_pings} // 0) >= 4,
       'ws: the server pinged (' . ($r->{server_pings} // 0) . ')');
    is($r->{too_big}, 1009, 'ws: over the limit closed with 1009');
}

# --- Chromium ---------------------------------------------------------------

SKIP: {
    skip "$CHROMIUM not installed (make deps installs it)", 13
        unless -x $CHROMIUM;

    my $r = run_json('chromium', 'node', "$browser/ws-echo.mjs",
                     'http://127.0.0.1:' . $t->port . '/ws-page',
                     'http://127.0.0.1:' . $t->port2 . '/ws-page', $base);

    my $s = $r->{same_origin} || {};
    ok($s->{opened}, 'chromium: opened from a page of the same origin');
    is($s->{extensions}, '', 'chromium: permessage-deflate not taken');
    is($s->{text}, $text, 'chromium: text echoed');
    ok($s->{binary_60k}, 'chromium: 60 KB binary echoed');
    ok($s->{burst_in_order}, 'chromium: 200 messages echoed in order');
    is_deeply($s->{close},
              { code => 1000, reason => '', clean => JSON::PP::true },
              'chromium: clean close 1000');
    ok($s->{kept_alive}, 'chromium: idle past the idle timeout, kept by pongs');
    is($s->{too_big} && $s->{too_big}{code}, 1009,
       'chromium: over the limit closed with 1009');

    my $f = $r->{foreign_origin} || {};
    ok(!$f->{opened}, 'chromium: a page of another origin cannot connect');
    is($f->{code}, 1006, 'chromium: the browser saw the handshake fail');
    ok((grep { /403/ } @{$r->{console} || []}),
       'chromium: because the server answered 403')
        or diag(explain($r->{console}));
}

# every connection is closed again
{
    my $m = $t->metrics('/status', fresh => 1);
    is($t->sample($m, 'platform_websocket_connections'), 0,
       'no connection left open');
    ok($t->sample($m, 'platform_websocket_closed_total',
                  reason => 'too_big') >= 3, 'three closed as too big');
}

done_testing;
