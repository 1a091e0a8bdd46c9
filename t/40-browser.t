#!/usr/bin/perl

# The landing page in headless Chromium (Debian's chromium driven by npm
# playwright-core): it loads with its stylesheet and module, calls
# /api/health through the module and shows "Database: ok".

use strict;
use warnings;

use Test::More;
use Test::Platform qw(browser_dir);

my $t = Test::Platform->new;
my $dir = browser_dir();

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        location = /api/health { platform_query GET api.health(); }
    }
EOF

$t->run;

my $url = 'http://127.0.0.1:' . $t->port . '/';
my $out = `node '$dir/smoke.mjs' '$url' 2>&1`;
my $rc = $? >> 8;

require JSON::PP;
my ($line) = $out =~ /^(\{.*\})\s*$/m;
my $res = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'smoke.mjs finished') or diag($out);
ok($res, 'smoke.mjs reported') or diag($out);
$res ||= {};

is($res->{status}, 200, 'page: 200');
is($res->{title}, 'Platform', 'title');
is_deeply($res->{sections}, [ 'Events', 'Rentals', 'Lift telemetry' ],
          'three sections');
is($res->{health}, 'Database: ok', 'page shows "Database: ok" from /api/health');
is($res->{stylesheet}, 'rgb(47, 91, 211)', 'stylesheet applied');
is_deeply($res->{errors}, [], 'no script or console errors')
    or diag(explain($res->{errors}));
is_deeply($res->{failed}, [], 'no failed requests')
    or diag(explain($res->{failed}));

my $log = Test::Platform::_slurp($t->testdir . '/access.log') // '';
like($log, qr{"GET /api/health HTTP/1\.1" 200}, 'the page called /api/health');
like($log, qr{"GET /js/api\.js HTTP/1\.1" 200}, 'and loaded js/api.js');

done_testing;
