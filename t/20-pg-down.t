#!/usr/bin/perl

# PostgreSQL goes away: requests are answered 503 with Retry-After within
# the configured limits (never a hang); when it comes back, requests succeed
# again without reloading nginx.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $t = Test::Platform->new(own_cluster => 1, workers => 1);

# queue timeout 2s: a request may wait at most that long for a connection.
my $QUEUE_TIMEOUT = 2;

$t->http_conf(<<'EOF');
    platform_pg main {
        server "%%CONNINFO%%";
        pool_size 2;
        queue 16 timeout=2s;
        connect_timeout 1s;
        query_timeout 2s;
        reconnect_backoff 100ms 1s;
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
        location = /status { platform_status; }
    }
EOF

$t->run;

my $master = $t->nginx_pid;
my @workers = $t->worker_pids;

is($t->get('/h')->{status}, 200, 'up: 200');

sub wait_up {
    my ($what) = @_;
    my $t0 = time;
    my ($r, $n) = (undef, 0);
    while (time - $t0 < 10) {
        $r = $t->get('/h', timeout => 5);
        $n++;
        last if $r->{status} == 200;
        sleep 0.2;
    }
    is($r->{status}, 200, "$what: a request succeeds again")
        or diag("last: $r->{status} $r->{content}");
    cmp_ok(time - $t0, '<=', 10, "$what: within 10 s ($n tries)");
}

sub down_requests {
    my ($what) = @_;

    for my $i (1 .. 5) {
        my $r = $t->get('/h', timeout => 10);
        is($r->{status}, 503, "$what, request $i: 503")
            or diag("$r->{status} $r->{content}");
        like($r->{headers}{'retry-after'} // '', qr/^\d+$/,
             "$what, request $i: Retry-After");
        cmp_ok($r->{elapsed}, '<', $QUEUE_TIMEOUT + 1,
               "$what, request $i: answered in "
               . sprintf('%.2f', $r->{elapsed}) . ' s (no hang)');
    }

    # Several at once, on fresh connections.
    my @h = map { $t->req_async('GET', '/h', timeout => 10) } 1 .. 4;
    for my $h (@h) {
        my $r = $t->wait_async($h);
        is($r->{status}, 503, "$what, concurrent: 503");
        cmp_ok($r->{elapsed}, '<', $QUEUE_TIMEOUT + 1,
               "$what, concurrent: answered in time");
    }
}

# ---------------------------------------------------------------- down

$t->pg_stop;

down_requests('PostgreSQL stopped');

my $m = $t->metrics('/status');
sub conn {
    my ($m, $state) = @_;
    $t->sample($m, 'platform_pg_connections', pool => 'main', state => $state);
}

my $up = (conn($m, 'idle') // 0) + (conn($m, 'busy') // 0);
is($up, 0, 'status: no idle or busy connection while PostgreSQL is down');
ok(defined conn($m, 'down'),
   'status: reports down connections') or diag($m->{_response}{content});

# ---------------------------------------------------------------- back

$t->pg_start;

wait_up('PostgreSQL started');

for my $i (1 .. 5) {
    is($t->get('/h')->{status}, 200, "after recovery, request $i: 200");
}

# Every connection of the pool comes back, not just one.
{
    my $t0 = time;
    my $idle;
    while (time - $t0 < 10) {
        $m = $t->metrics('/status');
        $idle = conn($m, 'idle');
        last if ($idle // 0) == 2;
        sleep 0.2;
    }
    is($idle, 2, 'status: both pool connections idle again');
}

# ---------------------------------------------------------------- again

# A second outage (the backoff starts over), this time a short one.
$t->pg_stop;
my $r = $t->get('/h', timeout => 10);
is($r->{status}, 503, 'second outage: 503');
cmp_ok($r->{elapsed}, '<', $QUEUE_TIMEOUT + 1, 'second outage: in time');
$t->pg_start;
wait_up('second restart');

# ---------------------------------------------------------------- frozen

# The server accepts the query and never answers (its backends stopped with
# SIGSTOP, so statement_timeout cannot fire either): after query_timeout
# plus one second the request is answered 504 and the connection replaced.
{
    is($t->get('/h')->{status}, 200, 'before freezing: 200');

    my @backends;
    my $t0 = time;
    while (time - $t0 < 10) {
        @backends = split /\n/, $t->psql(
            q{SELECT pid FROM pg_stat_activity
              WHERE usename = 'platform_app' AND datname = current_database()});
        last if @backends == 2;
        sleep 0.2;
    }
    is(scalar @backends, 2, 'two backends serve the pool');

    # These backends belong to the private cluster this test started.
    kill 'STOP', @backends;

    my $r = eval { $t->get('/h', timeout => 15) };

    kill 'CONT', @backends;

    $r ||= { status => 599, content => $@, elapsed => 99 };
    is($r->{status}, 504, 'server does not answer: 504')
        or diag("$r->{status} $r->{content}");
    cmp_ok($r->{elapsed}, '<', 2 + 1 + 1.5,
           'after query_timeout + 1 s (' . sprintf('%.2f', $r->{elapsed})
           . ' s)');
    cmp_ok($r->{elapsed}, '>', 1.5, 'not before query_timeout');

    wait_up('after the frozen server');
}

# ---------------------------------------------------------------- same nginx

is($t->nginx_pid, $master, 'same master');
is_deeply([ $t->worker_pids ], \@workers, 'same workers (no crash, no reload)');

done_testing;
