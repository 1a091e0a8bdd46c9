#!/usr/bin/perl

# Lift rollups (issue 8 item 6, sql/023_lifts_storage.sql): readings
# posted to /api/ingest by three lifts over the last two days are rolled
# up per hour and per day by the jobs runner's repeating `sql` job
# (maintenance.lifts_rollup, here every second); the rollups equal the
# raw readings; a lift that was offline then sends its backlog (hours
# already rolled up get more readings, new hours appear) and the next runs
# fold it in; staff read the rollups and the downsampled series through
# the query API, scoped to their organisation.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Test::Platform;
use Time::HiRes qw(sleep time);
use LiftTest qw(staff_session make_org mint_token msgpack now_ms);

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;                   # session.key
$t->key_file('device.key');

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 3; }

    platform_session_key $dir/session.key;
    platform_session_secure off;
    platform_device_key $dir/device.key;

    platform_jobs main;
    platform_jobs_interval 200ms;
    platform_jobs_timeout 10s;
    platform_jobs_lease 30s;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth lifts)) ]}
    }
EOF

$t->psql("UPDATE lifts.settings SET rollup_interval = '1 second'");
$t->run;

my $json = JSON::PP->new->canonical;
my $origin = 'http://127.0.0.1:' . $t->port;

my $org = make_org($t, 'Rollup client');
my $other = make_org($t, 'Other client');
$t->psql("INSERT INTO lifts.buildings (org_id, name) VALUES ($org, 'T');"
         . "INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors) "
         . "SELECT $org, b.id, 'RO-' || g, 'M', 30 "
         . "FROM lifts.buildings AS b, generate_series(1, 3) AS g");
my @lifts = split /\n/, $t->psql('SELECT id FROM lifts.lifts ORDER BY id');
my %token = map { $_ => mint_token("$dir/device.key", $_, 0) } @lifts;

sub ingest {
    my ($lift, $readings) = @_;
    my $r = $t->req('POST', '/api/ingest', body => msgpack($readings),
                    headers => { Authorization => "Bearer $token{$lift}",
                                 'Content-Type' => 'application/msgpack' });
    return $r->{status} == 200 ? $json->decode($r->{content}) : $r;
}

# Readings of LIFT from FROM_MS every STEP_MS, N of them, seq from SEQ:
# trips (floors up and down), door cycles, a fault every 13th, status.
sub readings {
    my ($seq, $from_ms, $step_ms, $n) = @_;
    my @r;
    for my $i (0 .. $n - 1) {
        my $s = $seq + $i;
        my $k = $s % 13 == 0 ? 'fault' : qw(trip door trip status)[$s % 4];
        push @r, { seq => $s, ts => $from_ms + $i * $step_ms, kind => $k,
                   temperature => sprintf('%.1f', 15 + ($s * 7) % 250 / 10),
                   $k eq 'trip' ? (floor_from => $s % 11,
                                   floor_to => ($s * 3) % 29) : (),
                   $k eq 'fault' ? (fault_code => "F$s") : () };
    }
    return \@r;
}

sub send_all {
    my ($lift, $all) = @_;
    my ($acc, $dup) = (0, 0);
    for (my $i = 0; $i < @$all; $i += 500) {
        my $last = $i + 499 < $#$all ? $i + 499 : $#$all;
        my $b = ingest($lift, [ @$all[$i .. $last] ]);
        die "ingest: $b->{status} $b->{content}\n" if $b->{status};
        $acc += $b->{accepted};
        $dup += $b->{duplicates};
    }
    return ($acc, $dup);
}

# The rollups that differ from the raw readings (0 when all agree).
my $diff_sql = <<'SQL';
WITH e AS (
    SELECT lift_id, date_trunc('hour', ts, 'UTC') AS hour, count(*) AS n,
           count(*) FILTER (WHERE kind = 'trip') AS trips,
           coalesce(sum(abs(floor_to - floor_from))
                        FILTER (WHERE kind = 'trip'), 0) AS fl,
           count(*) FILTER (WHERE kind = 'door') AS doors,
           count(*) FILTER (WHERE kind = 'fault') AS faults,
           min(temperature) AS tmin, max(temperature) AS tmax
    FROM lifts.readings GROUP BY 1, 2
), a AS (
    SELECT lift_id, hour, readings::bigint, trips::bigint, floors_travelled,
           door_cycles::bigint, faults::bigint, temp_min, temp_max
    FROM lifts.rollup_hourly
), ed AS (
    SELECT lift_id, (hour AT TIME ZONE 'UTC')::date AS day, sum(n) AS n,
           sum(trips) AS trips, sum(fl) AS fl, sum(doors) AS doors,
           sum(faults) AS faults, min(tmin) AS tmin, max(tmax) AS tmax,
           count(*) AS hours
    FROM e GROUP BY 1, 2
), ad AS (
    SELECT lift_id, day, readings::numeric, trips::numeric,
           floors_travelled::numeric, door_cycles::numeric, faults::numeric,
           temp_min, temp_max, hours_reporting::bigint
    FROM lifts.rollup_daily
)
SELECT (SELECT count(*) FROM ((SELECT * FROM e EXCEPT SELECT * FROM a)
                              UNION ALL
                              (SELECT * FROM a EXCEPT SELECT * FROM e)) AS x)
     + (SELECT count(*) FROM ((SELECT * FROM ed EXCEPT SELECT * FROM ad)
                              UNION ALL
                              (SELECT * FROM ad EXCEPT SELECT * FROM ed)) AS y)
SQL

sub wait_rollups {
    my ($what) = @_;
    my $deadline = time + 60;
    my $d;
    while (1) {
        $d = $t->psql($diff_sql);
        last if $d == 0 || time > $deadline;
        sleep 0.5;
    }
    is($d, 0, "$what: the rollups equal the raw readings");
}

# ------------------------------------------------------------------ steady

my $now = now_ms();
my $h = 3_600_000;
my ($acc) = send_all($lifts[0], readings(1, $now - 40 * $h, 60_000, 2400));
is($acc, 2400, 'lift 1: 40 hours of a reading a minute');
($acc) = send_all($lifts[1], readings(1, $now - 30 * $h, 45_000, 2400));
is($acc, 2400, 'lift 2: 30 hours, every 45 s');
($acc) = send_all($lifts[2], readings(1, $now - 40 * $h, 60_000, 1200));
is($acc, 1200, 'lift 3: its first 20 hours, then it goes offline');

wait_rollups('after the first readings');
is($t->psql("SELECT count(*) FROM lifts.rollup_hourly WHERE lift_id = $lifts[0]"),
   $t->psql("SELECT count(DISTINCT date_trunc('hour', ts, 'UTC')) "
            . "FROM lifts.readings WHERE lift_id = $lifts[0]"),
   'lift 1: one hourly row per hour it reported');
my $before = $t->psql("SELECT sum(readings) FROM lifts.rollup_daily "
                      . "WHERE lift_id = $lifts[2]");
is($before, 1200, 'lift 3: 1200 readings in its daily rollups');

# ------------------------------------------------------------------ backlog

# Lift 3 comes back with its backlog: the rest of its 40 hours, and a few
# readings it had kept from inside hours already rolled up.
my $backlog = readings(1201, $now - 20 * $h, 60_000, 1200);
push @$backlog, map { { seq => 5000 + $_, ts => $now - 39 * $h + 1000 * $_ + 7,
                        kind => 'trip', floor_from => 0, floor_to => 20,
                        temperature => '80.5' } } 1 .. 5;
my ($acc3, $dup3) = send_all($lifts[2], [ @$backlog, @{readings(1, $now - 40 * $h, 60_000, 10)} ]);
is($acc3, 1205, 'lift 3: the backlog stored');
is($dup3, 10, 'with the readings it resent counted as duplicates');

wait_rollups('after the backlog');
is($t->psql("SELECT sum(readings) FROM lifts.rollup_daily "
            . "WHERE lift_id = $lifts[2]"), 2405,
   'lift 3: the backlog is in its daily rollups');
is($t->psql("SELECT max(temp_max) FROM lifts.rollup_hourly "
            . "WHERE lift_id = $lifts[2]"), '80.5',
   'the late readings in an old hour are folded in');

# ------------------------------------------------------------------ query API

my $ann = staff_session($t, 'ann@example.org', $org);
my $bob = staff_session($t, 'bob@example.org', $other);

sub get {
    my ($path, $cookie) = @_;
    my $r = $t->req('GET', $path, headers => {
        Cookie => "platform_session=$cookie", Origin => $origin });
    return ($r->{status}, $t->json($r));
}

my ($st, $b) = get("/api/lift-orgs/$org/lifts/$lifts[2]/rollups?period=day"
                   . '&from=' . ($now - 3 * 24 * $h), $ann);
is($st, 200, 'daily rollups: 200');
my $sum = 0;
$sum += $_->{readings} for @{$b->{rows}};
is($sum, 2405, 'their readings add up');
is_deeply([ sort keys %{$b->{rows}[0]} ],
          [ qw(day door_cycles faults floors_travelled hours_reporting
               readings temp_max temp_min trips) ], 'with every figure');

($st, $b) = get("/api/lift-orgs/$org/lifts/$lifts[0]/rollups?period=hour"
                . '&from=' . ($now - 50 * $h) . '&to=' . ($now + $h), $ann);
is($st, 200, 'hourly rollups: 200');
is(scalar @{$b->{rows}},
   $t->psql("SELECT count(*) FROM lifts.rollup_hourly WHERE lift_id = $lifts[0]"),
   'one row per hour');

($st, $b) = get("/api/lift-orgs/$org/lifts/$lifts[0]/series?points=48"
                . '&from=' . ($now - 48 * $h) . '&to=' . $now, $ann);
is($st, 200, 'series: 200');
ok(@{$b->{series}} <= 48 && @{$b->{series}} >= 39,
   scalar(@{$b->{series}}) . ' points of at most 48');
$sum = 0;
$sum += $_->{readings} for @{$b->{series}};
is($sum, 2400, 'every reading in one of them');
is($b->{bucket_seconds}, 3600, 'an hour each');

($st, $b) = get("/api/lift-orgs/$org/lifts/$lifts[0]/series?points=0", $ann);
is($st, 400, 'points=0: 400');
like($b->{error}{detail}, qr/field: points/, 'naming the field');
($st, $b) = get("/api/lift-orgs/$org/lifts/$lifts[0]/series?from=soon", $ann);
is($st, 400, 'a bad from: 400');
($st) = get("/api/lift-orgs/$org/lifts/$lifts[0]/rollups?period=week", $ann);
is($st, 400, 'period=week: 400');

($st) = get("/api/lift-orgs/$other/lifts/$lifts[0]/rollups", $bob);
is($st, 404, "another organisation's lift: 404");
($st) = get("/api/lift-orgs/$other/lifts/$lifts[0]/series", $bob);
is($st, 404, 'its series too');
($st) = get("/api/lift-orgs/$org/lifts/$lifts[0]/rollups", $bob);
is($st, 403, "staff of another organisation on this one's path: 403");

done_testing();
