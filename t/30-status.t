#!/usr/bin/perl

# platform_status: the pools' figures in the Prometheus text format, summed
# over all worker processes.  Metric and label names:
#
#   platform_pg_connections{pool="main",state="idle|busy|connecting|down"}
#   platform_pg_queue_length{pool="main"}
#   platform_pg_queries_total{pool="main"}
#   platform_pg_errors_total{pool="main",class="23"}        (SQLSTATE class)
#   platform_pg_query_duration_seconds_bucket{pool="main",le="..."}
#   platform_pg_query_duration_seconds_sum{pool="main"}
#   platform_pg_query_duration_seconds_count{pool="main"}

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $WORKERS = 2;
my $POOL = 2;

my $t = Test::Platform->new(workers => $WORKERS);

$t->psql(<<'EOF');
CREATE TABLE public.t_uniq (id int PRIMARY KEY);
GRANT SELECT, INSERT ON public.t_uniq TO platform_app;

CREATE FUNCTION api.t_uniq_insert(id int) RETURNS json LANGUAGE sql AS $$
    INSERT INTO public.t_uniq VALUES (id) RETURNING json_build_object('id', id)
$$;

CREATE FUNCTION api.t_int(b int) RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('b', b)
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    log_format pids '$pid $uri $status';

    server {
        # reuseport: the kernel spreads new connections over both workers.
        listen 127.0.0.1:%%PORT%% reuseport;
        access_log %%TESTDIR%%/pids.log pids;

        location = /h      { platform_query GET api.health(); }
        location = /uniq   { platform_query POST api.t_uniq_insert($arg_id::int); }
        location = /int    { platform_query GET api.t_int($arg_b::int); }
        location = /status { platform_status; }
    }
EOF

$t->run;

my @workers = $t->worker_pids;
is(scalar @workers, $WORKERS, "$WORKERS workers");

sub conn {
    my ($m, $state) = @_;
    $t->sample($m, 'platform_pg_connections', pool => 'main', state => $state);
}

sub val {
    my ($m, $name, %l) = @_;
    $t->sample($m, $name, pool => 'main', %l);
}

# Status from fresh connections, so both workers get to answer it.
sub status { $t->metrics('/status', fresh => 1) }

# ---------------------------------------------------------------- format

my $m = status();
my $r = $m->{_response};

is($r->{status}, 200, 'status: 200');
like($r->{headers}{'content-type'} // '', qr{^text/plain}, 'text/plain');
like($r->{content}, qr/\n\z/, 'ends with a newline');

is($m->{_TYPE}{platform_pg_connections}, 'gauge', 'TYPE connections gauge');
is($m->{_TYPE}{platform_pg_queue_length}, 'gauge', 'TYPE queue_length gauge');
is($m->{_TYPE}{platform_pg_queries_total}, 'counter', 'TYPE queries_total counter');
is($m->{_TYPE}{platform_pg_errors_total}, 'counter', 'TYPE errors_total counter');
is($m->{_TYPE}{platform_pg_query_duration_seconds}, 'histogram',
   'TYPE query_duration_seconds histogram');

for my $state (qw(idle busy connecting down)) {
    like(conn($m, $state) // '', qr/^\d+$/, "connections state=\"$state\"");
}
like(val($m, 'platform_pg_queue_length') // '', qr/^\d+$/, 'queue_length');
like(val($m, 'platform_pg_queries_total') // '', qr/^\d+$/, 'queries_total');
like(val($m, 'platform_pg_query_duration_seconds_count') // '', qr/^\d+$/,
     'duration _count');
like(val($m, 'platform_pg_query_duration_seconds_sum') // '',
     qr/^[0-9.eE+-]+$/, 'duration _sum');
ok(defined val($m, 'platform_pg_query_duration_seconds_bucket', le => '+Inf'),
   'duration bucket le="+Inf"');

# ---------------------------------------------------------------- gauges

# Pools open at worker start: pool_size x workers idle connections.
{
    my $t0 = time;
    while (time - $t0 < 5) {
        $m = status();
        last if (conn($m, 'idle') // 0) == $POOL * $WORKERS;
        sleep 0.1;
    }
    is(conn($m, 'idle'), $POOL * $WORKERS,
       "idle connections: pool_size x workers = " . $POOL * $WORKERS
       . ' (summed over workers)');
    is(conn($m, 'busy'), 0, 'busy 0 at rest');
    is(conn($m, 'connecting'), 0, 'connecting 0');
    is(conn($m, 'down'), 0, 'down 0');
    is(val($m, 'platform_pg_queue_length'), 0, 'queue_length 0 at rest');
}

# Every worker reports the same totals.
{
    my %seen;
    for (1 .. 8) {
        my $s = status();
        $seen{ conn($s, 'idle') // 'undef' }++;
    }
    is_deeply([ keys %seen ], [ $POOL * $WORKERS ],
              'same sum whichever worker answers');
}

# ---------------------------------------------------------------- counters

sub histogram_ok {
    my ($m, $name) = @_;

    my @b;
    for my $k (keys %$m) {
        next unless $k =~ /^platform_pg_query_duration_seconds_bucket\{(.*)\}$/;
        my %l = $1 =~ /(\w+)="([^"]*)"/g;
        next unless ($l{pool} // '') eq 'main';
        push @b, [ $l{le} eq '+Inf' ? 9**9**9 : $l{le}, $m->{$k} ];
    }
    @b = sort { $a->[0] <=> $b->[0] } @b;

    cmp_ok(scalar @b, '>=', 5, "$name: at least 5 buckets");
    my $mono = 1;
    $mono &&= $b[$_][1] >= $b[$_ - 1][1] for 1 .. $#b;
    ok($mono, "$name: buckets are cumulative");
    is($b[-1][1], val($m, 'platform_pg_query_duration_seconds_count'),
       "$name: le=\"+Inf\" equals _count");
}

my $m0 = status();
my $q0 = val($m0, 'platform_pg_queries_total');
my $c0 = val($m0, 'platform_pg_query_duration_seconds_count');
my $s0 = val($m0, 'platform_pg_query_duration_seconds_sum');

my $N = 40;
my %served;
for (1 .. $N) {
    my $r = $t->get('/h', fresh => 1);
    fail("GET /h: $r->{status}") unless $r->{status} == 200;
}

{
    # Which workers served them (the access log has the worker pid).
    my $log = Test::Platform::_slurp($t->testdir . '/pids.log') // '';
    $served{$1}++ while $log =~ m{^(\d+) /h 200$}mg;
    is(scalar(keys %served), $WORKERS, 'requests went to both workers')
        or diag(explain(\%served));
}

my $m1 = status();
is(val($m1, 'platform_pg_queries_total') - $q0, $N,
   "queries_total grew by $N (summed over workers)");
is(val($m1, 'platform_pg_query_duration_seconds_count') - $c0, $N,
   "duration _count grew by $N");
cmp_ok(val($m1, 'platform_pg_query_duration_seconds_sum'), '>', $s0,
       'duration _sum grew');
cmp_ok(val($m1, 'platform_pg_query_duration_seconds_sum') - $s0, '<', $N * 1,
       'duration _sum is in seconds');
histogram_ok($m1, 'histogram');

# ---------------------------------------------------------------- errors

my $e23 = val($m1, 'platform_pg_errors_total', class => '23') // 0;
my $e22 = val($m1, 'platform_pg_errors_total', class => '22') // 0;

is($t->req('POST', '/uniq?id=1', fresh => 1)->{status}, 200, 'insert: 200');
is($t->req('POST', '/uniq?id=1', fresh => 1)->{status}, 409, 'again: 409');
is($t->req('POST', '/uniq?id=1', fresh => 1)->{status}, 409, 'again: 409');
is($t->get('/int?b=x', fresh => 1)->{status}, 400, 'bad int: 400');

my $m2 = status();
is(val($m2, 'platform_pg_errors_total', class => '23'), $e23 + 2,
   'errors_total{class="23"} grew by 2 after two 409s');
is(val($m2, 'platform_pg_errors_total', class => '22'), $e22 + 1,
   'errors_total{class="22"} grew by 1 after a 400');
is(val($m2, 'platform_pg_queries_total') - val($m1, 'platform_pg_queries_total'),
   4, 'queries_total counts failed queries too');
is(conn($m2, 'idle'), $POOL * $WORKERS, 'all connections idle again');
histogram_ok($m2, 'histogram after errors');

done_testing;
