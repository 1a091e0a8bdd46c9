#!/usr/bin/perl

# The pool is bounded: a full wait queue answers 503 at once, a wait longer
# than the queue timeout answers 503 after it (both with Retry-After); a
# query past query_timeout answers 504 and does not keep running in
# PostgreSQL.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $t = Test::Platform->new(workers => 1);

$t->psql(<<'EOF');
CREATE FUNCTION api.t_sleep(s float8) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(s);
    RETURN json_build_object('slept', s);
END
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg slow {
        server "%%CONNINFO%% application_name=t_slow";
        pool_size 1;
        pipeline_depth 1;
        queue 2 timeout=1s;
        query_timeout 10s;
    }

    platform_pg fast {
        server "%%CONNINFO%% application_name=t_fast";
        pool_size 1;
        pipeline_depth 1;
        query_timeout 1s;
    }

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /slow {
            platform_pg_pass slow;
            platform_query GET api.t_sleep($arg_s::float8);
        }

        location = /fast {
            platform_pg_pass fast;
            platform_query GET api.t_sleep($arg_s::float8);
        }
    }
EOF

$t->run;

is($t->get('/slow?s=0')->{status}, 200, 'slow pool answers');
is($t->get('/fast?s=0')->{status}, 200, 'fast pool answers');

sub sleepers {
    $t->psql(q{SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database()
                 AND usename = 'platform_app'
                 AND state = 'active'
                 AND (wait_event = 'PgSleep' OR query LIKE '%t_sleep%')});
}

# ---------------------------------------------------------------- queue

# One connection, one query at a time, two waiting places.
my $h1 = $t->req_async('GET', '/slow?s=3');        # runs for 3 s
sleep 0.5;
my $h2 = $t->req_async('GET', '/slow?s=3');        # waits: place 1
sleep 0.2;
my $h3 = $t->req_async('GET', '/slow?s=3');        # waits: place 2
sleep 0.2;
my $h4 = $t->req_async('GET', '/slow?s=3');        # queue full
my $h5 = $t->req_async('GET', '/slow?s=3');        # queue full

my ($r1, $r2, $r3, $r4, $r5) = map { $t->wait_async($_) } $h1, $h2, $h3, $h4, $h5;

is($r1->{status}, 200, 'running query: 200') or diag($r1->{content});
cmp_ok($r1->{elapsed}, '>=', 2.9, 'running query took its 3 s');

for ([ 'queue full', $r4 ], [ 'queue full (2)', $r5 ]) {
    my ($name, $r) = @$_;
    is($r->{status}, 503, "$name: 503") or diag("$r->{status} $r->{content}");
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/, "$name: Retry-After");
    cmp_ok($r->{elapsed}, '<', 0.5,
           "$name: answered at once (" . sprintf('%.2f', $r->{elapsed}) . ' s)');
}

for ([ 'queue timeout', $r2 ], [ 'queue timeout (2)', $r3 ]) {
    my ($name, $r) = @$_;
    is($r->{status}, 503, "$name: 503") or diag("$r->{status} $r->{content}");
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/, "$name: Retry-After");
    cmp_ok($r->{elapsed}, '>=', 0.8, "$name: waited for the queue timeout");
    cmp_ok($r->{elapsed}, '<', 2,
           "$name: answered after ~1 s (" . sprintf('%.2f', $r->{elapsed}) . ' s)');
}

is($t->get('/slow?s=0')->{status}, 200, 'the pool serves again afterwards');

# Queued requests are served in turn when the slot frees in time.
{
    my $a = $t->req_async('GET', '/slow?s=0.5');
    sleep 0.1;
    my $b = $t->req_async('GET', '/slow?s=0.1');
    my ($ra, $rb) = map { $t->wait_async($_) } $a, $b;
    is($ra->{status}, 200, 'first of two: 200');
    is($rb->{status}, 200, 'second waited in the queue and got its turn: 200');
}

# ---------------------------------------------------------------- timeout

my $r = $t->get('/fast?s=30', timeout => 20);
is($r->{status}, 504, 'query past query_timeout: 504') or diag($r->{content});
cmp_ok($r->{elapsed}, '<', 3,
       'answered after ~1 s (' . sprintf('%.2f', $r->{elapsed}) . ' s)');
my $j = $t->json($r);
is(ref $j eq 'HASH' && ref $j->{error} eq 'HASH' && $j->{error}{code},
   '57014', '504 body names query_canceled');

{
    my $t0 = time;
    my $n;
    while (time - $t0 < 3) {
        $n = sleepers();
        last if $n == 0;
        sleep 0.1;
    }
    is($n, 0, 'no pg_sleep left running in PostgreSQL');
}

$r = $t->get('/fast?s=0');
is($r->{status}, 200, 'the connection is usable after the timeout');

# Concurrent timeouts on one connection do not leave it stuck either.
{
    my @h = map { $t->req_async('GET', '/fast?s=30', timeout => 20) } 1 .. 2;
    my @r = map { $t->wait_async($_) } @h;
    ok((grep { $_->{status} == 504 || $_->{status} == 503 } @r) == 2,
       'two slow queries: both answered 504/503')
        or diag(join ' ', map { $_->{status} } @r);
    ok((grep { $_->{elapsed} < 5 } @r) == 2, 'both within limits');
}

is($t->get('/fast?s=0')->{status}, 200, 'still usable');
is($t->get('/slow?s=0')->{status}, 200, 'slow pool untouched');

done_testing;
