#!/usr/bin/perl

# 10,000 requests (keep-alive; answered 200, 404, 400, 405 and 413) leave
# the worker's open files and the server connections as they were.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $N = $ENV{PLATFORM_LEAK_REQUESTS} || 10_000;

my $t = Test::Platform->new(workers => 1);

$t->psql(<<'EOF');
CREATE FUNCTION api.t_int(b int) RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('b', b)
$$;
CREATE FUNCTION api.t_null() RETURNS json LANGUAGE sql AS $$
    SELECT NULL::json
$$;
CREATE FUNCTION api.t_body(body jsonb) RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('n', jsonb_array_length(body))
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    server {
        listen 127.0.0.1:%%PORT%%;
        keepalive_requests 100000;

        location = /ok   { platform_query GET api.health(); }
        location = /nf   { platform_query GET api.t_null(); }
        location = /int  { platform_query GET api.t_int($arg_b::int); }
        location = /body {
            platform_body_max_size 2k;
            platform_query POST api.t_body($platform_body::jsonb);
        }
    }
EOF

$t->run;

my ($worker) = $t->worker_pids;
ok($worker, "worker $worker");

my @mix = (
    [ GET  => '/ok',         200 ],
    [ GET  => '/nf',         404 ],
    [ GET  => '/int?b=5',    200 ],
    [ GET  => '/int?b=x',    400 ],
    [ POST => '/body',       200, '[1,2,3]' ],
    [ GET  => '/ok',         200 ],
    [ PUT  => '/ok',         405, '{}' ],
    [ POST => '/body',       400, '[1,' ],
    [ HEAD => '/ok',         200 ],
    [ POST => '/body',       413, '[' . join(',', (1) x 1500) . ']' ],
);

my %bad;

sub run_mix {
    my ($n) = @_;
    my $ok = 0;
    for my $i (0 .. $n - 1) {
        my ($m, $path, $status, $body) = @{ $mix[$i % @mix] };
        my $r = $t->req($m, $path, defined $body ? (body => $body) : ());
        if ($r->{status} == $status) {
            $ok++;
        } else {
            my $k = "$m $path: $r->{status} (want $status)";
            diag("$k: $r->{content}") unless $bad{$k}++;
        }
    }
    return $ok;
}

sub fds {
    opendir(my $dh, "/proc/$worker/fd") or return -1;
    my $n = grep { /^\d+$/ } readdir $dh;
    closedir $dh;
    return $n;
}

sub fd_list {
    join "\n", map { "$_ -> " . (readlink("/proc/$worker/fd/$_") // '?') }
               sort { $a <=> $b } grep { /^\d+$/ }
               do { opendir(my $dh, "/proc/$worker/fd"); readdir $dh };
}

sub backends {
    $t->psql(q{SELECT count(*) FROM pg_stat_activity
               WHERE usename = 'platform_app'
                 AND datname = current_database()});
}

sub rss {
    my $s = Test::Platform::_slurp("/proc/$worker/status") // '';
    return $s =~ /^VmRSS:\s+(\d+)/m ? $1 : 0;
}

# Wait until the figures settle (connections closing, the pool refilling).
sub settled {
    my ($want_fds, $want_be) = @_;
    my ($f, $b);
    my $t0 = time;
    while (time - $t0 < 5) {
        ($f, $b) = (fds(), backends());
        last if $f == $want_fds && $b == $want_be;
        sleep 0.2;
    }
    return ($f, $b);
}

# ---------------------------------------------------------------- warm up

my $warm = run_mix(500);
is($warm, 500, 'warm-up: every answer as expected');
sleep 0.5;

my ($fd0, $be0, $rss0) = (fds(), backends(), rss());
my $fdlist0 = fd_list();
note("after warm-up: $fd0 fds, $be0 backends, RSS $rss0 kB");
is($be0, 2, 'pool_size 2: two server connections');

# ---------------------------------------------------------------- run

my $t0 = time;
my $ok = run_mix($N);
my $took = time - $t0;
note(sprintf('%d requests in %.1f s (%.0f/s)', $N, $took, $N / $took));

is($ok, $N, "$N requests: every answer as expected");

my ($fd1, $be1) = settled($fd0, $be0);
my $rss1 = rss();
note("after the run: $fd1 fds, $be1 backends, RSS $rss1 kB");

is($fd1, $fd0, 'worker open files unchanged') or diag("before:\n$fdlist0\nafter:\n" . fd_list());
is($be1, $be0, 'server connections unchanged');
is(($t->worker_pids)[0], $worker, 'same worker (no crash)');

done_testing;
