#!/usr/bin/perl

# Lift readings ingest (issue 8 items 3-5, ngx_platform_ingest.c,
# ngx_platform_reading.c, lifts.ingest in sql/018_lifts.sql): one reading
# or an array, MessagePack or JSON; what is stored; duplicates (the same
# seq and ts) counted and not stored twice; per-reading errors naming the
# index and field, the valid others stored; malformed bodies, too many
# readings, nesting, the time window, content types; many concurrent
# requests of several lifts batched together, each reading stored once;
# the write queue's bound answered 503 + Retry-After while PostgreSQL is
# held up, the requests already taken answered once it moves again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Test::Platform;
use LiftTest qw(make_org mint_token msgpack now_ms);

my $t = Test::Platform->new(workers => 2);
my $dir = $t->testdir;

$t->key_file('device.key');

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_device_key $dir/device.key;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/ingest {
            platform_ingest main;
            platform_ingest_max_readings 50;
            platform_ingest_window 7d 5m;
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;

        location = /api/ingest {
            platform_ingest main;
            platform_ingest_max_readings 10;
            platform_ingest_queue 10;
            platform_ingest_flights 1;
            platform_ingest_body_max_size 2k;
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->canonical;

sub body_of { $t->json($_[0]) || {} }

# Lifts 1..3 of one organisation (generation 0: tokens minted directly).
my $org = make_org($t, 'Acme');
$t->psql("INSERT INTO lifts.buildings (org_id, name) VALUES ($org, 'T');"
         . "INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors) "
         . "SELECT $org, b.id, 'SN-' || g, 'M', 10 "
         . "FROM lifts.buildings AS b, generate_series(1, 3) AS g");
my @lifts = split /\n/, $t->psql('SELECT id FROM lifts.lifts ORDER BY id');
my %token = map { $_ => mint_token("$dir/device.key", $_, 0) } @lifts;
my $L = $lifts[0];

sub ingest {
    my ($lift, $body, %o) = @_;
    my $type = $o{type} // 'application/msgpack';
    my $data = ref $body ? ($type =~ /json/ ? $json->encode($body)
                                            : msgpack($body))
                         : $body;
    return $t->req('POST', '/api/ingest', body => $data,
                   port => $o{port},
                   headers => { Authorization => "Bearer $token{$lift}",
                                'Content-Type' => $type });
}

sub stored {
    my ($where) = @_;
    return $t->psql("SELECT count(*) FROM lifts.readings WHERE $where");
}

my $now = now_ms();

# ------------------------------------------------------------------ one

my $trip = { seq => 1, ts => $now, kind => 'trip', floor_from => 0,
             floor_to => 7, direction => 'up', load => 320,
             temperature => '21.5', fault_code => undef,
             counters => { trips => 1000, floors => 5000,
                           door_cycles => 2100, faults => 3,
                           run_seconds => 86400 } };

my $r = ingest($L, $trip);
is($r->{status}, 200, 'one reading (MessagePack): 200');
is_deeply(body_of($r), { accepted => 1, duplicates => 0, invalid => 0,
                         errors => [] }, 'accepted 1');
is($t->psql("SELECT concat_ws(' ', kind, floor_from, floor_to, direction, "
            . "load_kg, temperature, coalesce(fault_code, '-'), trips, "
            . "floors, door_cycles, faults, run_seconds, "
            . "(extract(epoch FROM ts) * 1000)::bigint) "
            . "FROM lifts.readings WHERE lift_id = $L AND seq = 1"),
   "trip 0 7 up 320 21.5 - 1000 5000 2100 3 86400 $now",
   'stored as sent');

$r = ingest($L, $trip);
is_deeply([@{body_of($r)}{qw(accepted duplicates)}], [0, 1],
          'sent again: a duplicate');
is(stored("lift_id = $L AND seq = 1"), 1, 'stored once');

$r = ingest($L, { %$trip, ts => $now + 1 });
is(body_of($r)->{accepted}, 1,
   'the same seq with another ts is another reading (the key is seq and ts)');

$r = ingest($L, { seq => 2, ts => $now, kind => 'fault',
                  fault_code => 'E:DOOR-12' }, type => 'application/json');
is($r->{status}, 200, 'one reading (JSON): 200');
is($t->psql("SELECT fault_code FROM lifts.readings WHERE lift_id = $L "
            . "AND seq = 2"), 'E:DOOR-12', 'fault code stored');

# ------------------------------------------------------------------ batch

my @batch = map { { seq => 100 + $_, ts => $now - 60_000 * $_,
                    kind => 'door', counters => { door_cycles => 5000 + $_ } } }
            0 .. 39;

for my $type ('application/msgpack', 'application/json; charset=utf-8') {
    $r = ingest($lifts[1], \@batch, type => $type);
    is($r->{status}, 200, "40 readings ($type): 200");
}
is(stored("lift_id = $lifts[1]"), 40, '40 stored once');

# two copies of one reading in one batch: one stored, one duplicate
$r = ingest($lifts[1], [ { seq => 500, ts => $now, kind => 'status' },
                         { seq => 500, ts => $now, kind => 'status' } ]);
is_deeply([@{body_of($r)}{qw(accepted duplicates)}], [1, 1],
          'a reading twice in one batch: 1 accepted, 1 duplicate');

# ------------------------------------------------------------------ errors

my @mixed = (
    { seq => 600, ts => $now, kind => 'trip' },                     # ok
    { seq => 601, ts => $now, kind => 'lift-off' },                 # kind
    { seq => -1, ts => $now, kind => 'trip' },                      # seq
    { seq => 603, ts => $now + 3_600_000, kind => 'trip' },         # future
    { seq => 604, ts => $now - 8 * 86_400_000, kind => 'trip' },    # past
    { seq => 605, kind => 'trip' },                                 # no ts
    { seq => 606, ts => $now, kind => 'trip', floor_to => 999 },    # range
    { seq => 607, ts => $now, kind => 'trip', colour => 'red' },    # unknown
    { seq => 608, ts => $now, kind => 'trip', temperature => 'hot' },
    { seq => 609, ts => $now, kind => 'fault', fault_code => 'a b' },
    { seq => 610, ts => $now, kind => 'trip', counters => { trips => -5 } },
    { seq => 611, ts => $now, kind => 'trip', counters => [1] },
    'not a map',
    { seq => 613, ts => $now, kind => 'trip' },                     # ok
);

for my $type ('application/msgpack', 'application/json') {
    $r = ingest($lifts[2], \@mixed, type => $type);
    is($r->{status}, 200, "a batch with bad readings ($type): 200");
    my $b = body_of($r);
    is($b->{invalid}, 12, '12 invalid');
    is_deeply([map { "$_->{index} $_->{field}" } @{$b->{errors}}],
              ['1 kind', '2 seq', '3 ts', '4 ts', '5 ts', '6 floor_to',
               '7 -', '8 temperature', '9 fault_code', '10 trips',
               '11 counters', '12 -'],
              'each error names the index and the field');
    like($b->{errors}[2]{reason}, qr/future/, 'with a reason');
}
is(stored("lift_id = $lifts[2]"), 2, 'the two valid readings stored');

$r = ingest($L, [ { seq => 1 } ]);
is($r->{status}, 400, 'nothing valid: 400');
is(body_of($r)->{errors}[0]{field}, 'ts', 'naming the field');

for my $case (['not MessagePack', "\xc1", 'application/msgpack'],
              ['truncated', substr(msgpack(\@batch), 0, 50),
               'application/msgpack'],
              ['trailing bytes', msgpack($trip) . "\x00",
               'application/msgpack'],
              ['a huge declared array', "\xdd\xff\xff\xff\xff",
               'application/msgpack'],
              ['a huge declared map', "\x91\xdf\xff\xff\xff\xff",
               'application/msgpack'],
              ['too deep', "\x91" x 20 . "\x80", 'application/msgpack'],
              ['not JSON', '{"seq": 1,', 'application/json'],
              ['JSON too deep', '[' x 100 . ']' x 100, 'application/json'],
              ['a number', '42', 'application/json'],
              ['an empty array', '[]', 'application/json'],
              ['empty', '', 'application/json'])
{
    $r = ingest($L, $case->[1], type => $case->[2]);
    is($r->{status}, 400, "$case->[0]: 400");
    is(body_of($r)->{error}{code}, 'malformed', 'malformed');
}

$r = ingest($L, [ ({ seq => 1, ts => $now, kind => 'trip' }) x 51 ]);
is($r->{status}, 413, 'more than platform_ingest_max_readings: 413');
is(body_of($r)->{error}{code}, 'too_many_readings', 'too_many_readings');

$r = ingest($L, $trip, type => 'text/plain');
is($r->{status}, 415, 'text/plain: 415');

$r = ingest($L, ' ' x 3000 . $json->encode($trip), port => $t->port2,
           type => 'application/json');
is($r->{status}, 413, 'a body over platform_ingest_body_max_size: 413');

$r = $t->req('GET', '/api/ingest',
             headers => { Authorization => "Bearer $token{$L}" });
is($r->{status}, 405, 'GET: 405');

# ------------------------------------------------------------------ batched

# 3 lifts x 10 requests x 20 readings at once, over two workers
my @h;
for my $i (0 .. 9) {
    for my $lift (@lifts) {
        my @rs = map { { seq => 10_000 + $i * 20 + $_, ts => $now,
                         kind => 'trip' } } 0 .. 19;
        push @h, $t->req_async('POST', '/api/ingest', body => msgpack(\@rs),
                               headers => {
                                   Authorization => "Bearer $token{$lift}",
                                   'Content-Type' => 'application/msgpack' });
    }
}
my ($ok, $acc) = (0, 0);
for (@h) {
    my $r = $t->wait_async($_);
    $ok++ if $r->{status} == 200;
    $acc += (body_of($r)->{accepted} // 0);
}
is($ok, 30, '30 concurrent requests: all 200');
is($acc, 600, '600 readings acknowledged');
is(stored('seq >= 10000'), 600, 'and 600 stored');

# ------------------------------------------------------------------ bound

# Hold lifts.lifts: the statement in flight waits, a second request waits
# in the queue (10 readings in all), a third is over the bound.
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    $t->psql('BEGIN; LOCK TABLE lifts.lifts IN ACCESS EXCLUSIVE MODE; '
             . 'SELECT pg_sleep(4); COMMIT;');
    POSIX::_exit(0);
}
for (1 .. 100) {
    last if $t->psql("SELECT count(*) FROM pg_locks WHERE mode = "
                     . "'AccessExclusiveLock' AND relation = "
                     . "'lifts.lifts'::regclass AND granted") == 1;
    select(undef, undef, undef, 0.05);
}

sub five {
    my ($base) = @_;
    return msgpack([ map { { seq => $base + $_, ts => $now,
                             kind => 'status' } } 0 .. 4 ]);
}

my %hdr = (Authorization => "Bearer $token{$L}",
           'Content-Type' => 'application/msgpack');
my $first = $t->req_async('POST', '/api/ingest', body => five(20_000),
                          port => $t->port2, headers => \%hdr);
select(undef, undef, undef, 0.5);
my $second = $t->req_async('POST', '/api/ingest', body => five(20_010),
                           port => $t->port2, headers => \%hdr);
select(undef, undef, undef, 0.5);

# with two workers the third may land on the worker that holds nothing:
# send until one is refused (or give up after ten)
my ($refused, @extra);
for my $i (1 .. 10) {
    my $r = $t->req('POST', '/api/ingest', body => five(20_100 + 10 * $i),
                    port => $t->port2, headers => \%hdr, fresh => 1,
                    timeout => 0.5);
    if ($r->{status} == 503) {
        $refused = $r;
        last;
    }
}
ok($refused, 'over platform_ingest_queue: 503');
is($refused && $refused->{headers}{'retry-after'}, '1', 'with Retry-After');

waitpid($pid, 0);
is($t->wait_async($first)->{status}, 200, 'the request in flight: 200');
is($t->wait_async($second)->{status}, 200, 'the queued one: 200');
is(stored('seq BETWEEN 20000 AND 20014'), 10, 'both stored');

done_testing;
