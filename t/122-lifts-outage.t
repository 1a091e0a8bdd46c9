#!/usr/bin/perl

# The reference lift client (t/lib/lift_client.py) against nginx while
# PostgreSQL is stopped and started again under load (issue 8: "a reading
# acknowledged is never lost"): three lifts send a reading every 50 ms in
# batches (one enrols through the device flow first, MessagePack; one sends
# JSON); during the outage they get 503 or no answer and keep a backlog,
# which they replay afterwards.  In the end every reading each client made
# is stored exactly once, and every reading acknowledged to a client is
# among them.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);
use LiftTest qw(make_org mint_token);

my $t = Test::Platform->new(own_cluster => 1, workers => 2);
my $dir = $t->testdir;
my $root = $t->root;

$t->key_file;                   # session.key (lifts.conf's staff parts)
$t->key_file('device.key');

$t->http_conf(<<"EOF");
    platform_pg main {
        server "%%CONNINFO%%";
        pool_size 2;
        queue 64 timeout=2s;
        connect_timeout 1s;
        query_timeout 5s;
        reconnect_backoff 100ms 500ms;
    }

    platform_session_key $dir/session.key;
    platform_device_key $dir/device.key;

    server {
        listen 127.0.0.1:%%PORT%%;
        set \$platform_public_url http://127.0.0.1:%%PORT%%;
        include %%ROOT%%/conf/api/lifts.conf;
    }
EOF

$t->run;

my $org = make_org($t, 'Acme');
$t->psql("INSERT INTO lifts.buildings (org_id, name) VALUES ($org, 'T');"
         . "INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors) "
         . "SELECT $org, b.id, 'SN-' || g, 'M', 10 "
         . "FROM lifts.buildings AS b, generate_series(1, 3) AS g");
my %id = map { split / / } split /\n/,
    $t->psql("SELECT serial || ' ' || id FROM lifts.lifts");

my $COUNT = 120;
my $url = 'http://127.0.0.1:' . $t->port;

# SN-2 and SN-3 have tokens already; SN-1 enrols.
for my $n (2, 3) {
    mkdir "$dir/lift$n";
    open my $fh, '>', "$dir/lift$n/token" or die $!;
    print $fh mint_token("$dir/device.key", $id{"SN-$n"}, 0), "\n";
    close $fh;
}

my %pid;
for my $n (1 .. 3) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/lift$n.log";
        open STDERR, '>&', \*STDOUT;
        exec('python3', "$root/t/lib/lift_client.py", '--url', $url,
             '--serial', "SN-$n", '--state', "$dir/lift$n",
             '--interval', '0.05', '--count', $COUNT, '--batch', 20,
             '--deadline', 120, $n == 3 ? ('--json') : ());
        die "exec: $!";
    }
    $pid{$n} = $pid;
}

# approve SN-1's user code when it shows it
my $code;
for (1 .. 200) {
    if (open my $fh, '<', "$dir/lift1/user_code") {
        chomp($code = <$fh> // '');
        last if $code;
    }
    sleep 0.05;
}
ok($code, 'the client shows a user code');
(my $plain = $code // '') =~ s/-//;
$t->psql("UPDATE lifts.device_authorizations SET state = 'approved', "
         . "lift_id = $id{'SN-1'} WHERE user_code = '$plain'");

# let the lifts send for a while, then take PostgreSQL away for 3 s
sleep 2;
$t->pg_stop;
sleep 3;
$t->pg_start;

for my $n (1 .. 3) {
    waitpid($pid{$n}, 0);
    is($? >> 8, 0, "lift $n made its readings and emptied its backlog")
        or diag(`tail -n 20 $dir/lift$n.log`);
}

for my $n (1 .. 3) {
    my $lift = $id{"SN-$n"};

    open my $fh, '<', "$dir/lift$n/acked" or die "acked: $!";
    my @acked = map { [split / /] } <$fh>;
    close $fh;

    is(scalar(grep { $_->[2] ne "ok\n" } @acked), 0,
       "lift $n: no reading refused as invalid");

    # what was acknowledged, as "seq:ts", against the table
    my %acked = map { ("$_->[0]:$_->[1]" => 1) } @acked;
    my %stored;
    for (split /\n/, $t->psql("SELECT seq || ':' || "
             . "(extract(epoch FROM ts) * 1000)::bigint || ' ' || count(*) "
             . "OVER (PARTITION BY seq) FROM lifts.readings "
             . "WHERE lift_id = $lift")) {
        my ($k, $n) = split / /;
        $stored{$k} = $n;
    }

    is(scalar(keys %stored), $COUNT, "lift $n: $COUNT readings stored");
    is(scalar(grep { $stored{$_} != 1 } keys %stored), 0,
       "lift $n: each seq once");
    is(scalar(grep { !$stored{$_} } keys %acked), 0,
       "lift $n: every acknowledged reading is stored");
    is_deeply([sort { $a <=> $b } map { (split /:/)[0] } keys %stored],
              [1 .. $COUNT], "lift $n: seq 1..$COUNT");
}

done_testing;
