#!/usr/bin/perl

# Lift readings retention and archival (issue 8 item 6,
# sql/023_lifts_storage.sql, tools/lifts-archive, tools/lifts-restore):
# raw partitions older than the retention are copied to gzip files with a
# manifest (rows, sha256, time range) and dropped, newer ones kept; the
# rollups stay; a restore brings back the same rows; a file that does not
# match its manifest is refused; a second restore of a restored partition
# is refused; the manifest file alone is enough to restore into a database
# that lost its manifest rows.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use JSON::PP;
use Test::More;
use Test::Platform;
use LiftTest qw(make_org);

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $root = $t->root;
my $adir = "$dir/archive";

my $org = make_org($t, 'Archive Org');
$t->psql("INSERT INTO lifts.buildings (org_id, name) VALUES ($org, 'T');"
         . "INSERT INTO lifts.lifts (org_id, building_id, serial, model, floors) "
         . "SELECT $org, b.id, 'AR-' || g, 'M', 10 "
         . "FROM lifts.buildings AS b, generate_series(1, 2) AS g");

# Two lifts: a reading every 10 minutes from 95 to 85 days ago (with
# temperatures, counters and a fault now and then), so some days are past
# the 90-day retention and some not.
my $ingest = <<'SQL';
SELECT lifts.ingest(array_agg(l.id), array_agg(0), array_agg(g::bigint),
    array_agg((extract(epoch FROM now() - interval '95 days'
               + g * interval '10 minutes') * 1000)::bigint),
    array_agg(CASE WHEN g % 9 = 0 THEN 'fault' ELSE 'trip' END),
    array_agg(g % 5), array_agg(g % 7), array_agg('up'::text),
    array_agg(g % 600), array_agg(((g % 30) + 0.25)::real),
    array_agg(CASE WHEN g % 9 = 0 THEN 'E:' || g END),
    array_agg(1000 + g::bigint), array_agg(5000 + g::bigint),
    array_agg(NULL::bigint), array_agg(g::bigint / 9), array_agg(NULL::bigint))
FROM lifts.lifts AS l, generate_series(1, 1440) AS g
SQL
like($t->psql($ingest), qr/^a{2880}$/, '2880 readings stored');
$t->psql('SELECT maintenance.lifts_rollup()');
my $rollups = $t->psql('SELECT count(*), sum(readings) FROM lifts.rollup_daily');

my $old = $t->psql(q{SELECT count(*) FROM lifts.readings
                     WHERE ts < date_trunc('day', now() - interval '90 days', 'UTC')});
ok($old > 0, "$old readings in days past the retention");
my @due = split /\n/, $t->psql('SELECT partition FROM lifts.archive_candidates()');
ok(@due >= 4, scalar(@due) . ' partitions due');

$t->psql('CREATE TABLE public.before AS SELECT * FROM lifts.readings');

sub tool {
    my ($name, @args) = @_;
    local $ENV{PGHOST} = $t->pghost;
    local $ENV{PGPORT} = $t->pgport;
    local $ENV{PGDATABASE} = $t->dbname;
    local $ENV{PGUSER} = 'postgres';
    my $out = qx{"$root/tools/$name" @args 2>&1};
    return ($? >> 8, $out);
}

# ---------------------------------------------------------------- archive

my ($rc, $out) = tool('lifts-archive', $adir);
is($rc, 0, 'lifts-archive succeeds') or diag $out;
is(scalar(() = $out =~ /^readings_\d{8}: \d+ rows/mg), scalar @due,
   'one line per partition');

is($t->psql('SELECT count(*) FROM lifts.archive_candidates()'), 0,
   'nothing due any more');
for my $p (@due) {
    is($t->psql("SELECT to_regclass('lifts.$p') IS NULL"), 't', "$p dropped");
}
is($t->psql('SELECT count(*) FROM lifts.readings'),
   $t->psql('SELECT count(*) FROM public.before') - $old,
   'only the readings past the retention are gone');
is($t->psql('SELECT count(*), sum(readings) FROM lifts.rollup_daily'),
   $rollups, 'the rollups stay');

open my $mf, '<', "$adir/manifest.jsonl" or die "manifest: $!";
my @m = map { decode_json($_) } <$mf>;
close $mf;
is(scalar @m, scalar @due, 'one manifest line per partition');

my $total = 0;
for my $m (@m) {
    my $file = "$adir/$m->{file}";
    my $sha = Digest::SHA->new(256)->addfile($file)->hexdigest;
    is($sha, $m->{sha256}, "$m->{partition}: the sha256 matches");
    my $csv;
    gunzip($file => \$csv) or die $GunzipError;
    my @lines = split /\n/, $csv;
    is(scalar(@lines) - 1, $m->{rows}, "$m->{partition}: $m->{rows} rows "
       . '(plus a header)');
    like($lines[0], qr/^lift_id,seq,ts,kind,/, 'the header names the columns');
    ok($m->{min_ts} le $m->{max_ts} && $m->{min_ts} =~ /^\d{4}-/,
       'the time range');
    $total += $m->{rows};
}
is($total, $old, 'the files hold every archived reading');
is($t->psql('SELECT sum(rows) FROM lifts.archives'), $old,
   'so does the manifest table');

# ---------------------------------------------------------------- restore

my $p0 = $due[0];
my $f0 = "$adir/$p0.csv.gz";

# a damaged file is refused
rename $f0, "$f0.good";
open my $fh, '>:raw', $f0 or die;
print $fh "not the archive";
close $fh;
($rc, $out) = tool('lifts-restore', $adir, $p0);
isnt($rc, 0, 'a file not matching its sha256 is refused');
like($out, qr/sha256/, 'saying so');
is($t->psql("SELECT to_regclass('lifts.$p0') IS NULL"), 't',
   'nothing restored');
rename "$f0.good", $f0;

($rc, $out) = tool('lifts-restore', $adir, @due);
is($rc, 0, 'lifts-restore succeeds') or diag $out;

is($t->psql('SELECT count(*) FROM (SELECT * FROM public.before EXCEPT ALL '
            . 'SELECT * FROM lifts.readings) AS x'), 0,
   'every reading is back');
is($t->psql('SELECT count(*) FROM (SELECT * FROM lifts.readings EXCEPT ALL '
            . 'SELECT * FROM public.before) AS x'), 0,
   'and nothing else: the same rows');
is($t->psql('SELECT count(*) FROM lifts.archive_candidates()'), 0,
   'a restored partition is kept for a while');

($rc, $out) = tool('lifts-restore', $adir, $p0);
isnt($rc, 0, 'restoring into a partition with rows is refused');

# archive again, then restore with the manifest file only
$t->psql("UPDATE lifts.settings SET restore_keep = '0'");
($rc, $out) = tool('lifts-archive', $adir);
is($rc, 0, 'archived again') or diag $out;
$t->psql('DELETE FROM lifts.archives');
($rc, $out) = tool('lifts-restore', $adir, $p0);
is($rc, 0, 'restored from manifest.jsonl alone') or diag $out;
is($t->psql("SELECT count(*) FROM lifts.$p0"),
   $t->psql("SELECT count(*) FROM public.before WHERE ts >= "
            . "lifts.partition_day('$p0')::timestamp AT TIME ZONE 'UTC' AND ts < "
            . "(lifts.partition_day('$p0') + 1)::timestamp AT TIME ZONE 'UTC'"),
   'with its rows');

# ---------------------------------------------------------------- jobs

like($t->psql(q{SELECT maintenance.lifts_retention() ->> 'archive_due'}),
     qr/^\[.*\]$/, 'the retention job reports what is due');
is($t->psql(q{SELECT count(*) FROM jobs.jobs WHERE state = 'pending' AND }
            . q{key IN ('maintenance:lifts_rollup', 'maintenance:lifts_retention', }
            . q{'maintenance:lifts_silence')}), 3,
   'the rollup, retention and silence jobs are scheduled');

done_testing();
