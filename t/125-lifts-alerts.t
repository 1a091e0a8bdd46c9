#!/usr/bin/perl

# Lift alerts and status (issue 8 items 7-8, sql/024_lifts_alerts.sql,
# conf/api/lifts.conf) with the real pieces: nginx and its jobs runner, an
# SMTP sink and a webhook receiver.  Staff manage rules of their
# organisation (validation naming the field, another organisation's rule
# 404); a temperature rule fires once when a posted reading is over the
# threshold (one mail, one signed webhook), stays firing, resolves when a
# reading is back under it (mail and webhook again); an elevations counter
# rule over a million; a silence rule fires on the timer when a lift stops
# reporting and resolves when it reports; alert history and the status of
# a lift and a building through the query API, 404 for others.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Test::Platform;
use Time::HiRes qw(sleep time);
use LiftTest qw(staff_session make_org mint_token msgpack now_ms);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $SECRET = 'whsec_125liftsAlerts0123456789';

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;                   # session.key
$t->key_file('device.key');

my $smtp = $t->smtp_sink;
my $http = $t->http_sink(secret => $SECRET);
my ($SP, $HP) = ($smtp->port, $http->port);

$t->psql(<<"EOF");
INSERT INTO jobs.webhook_targets (name, url, secret)
VALUES ('ops', 'http://127.0.0.1:$HP/lift-alerts', '$SECRET');
UPDATE lifts.settings SET silence_interval = '1 second';
EOF

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 3; }

    platform_session_key $dir/session.key;
    platform_session_secure off;
    platform_device_key $dir/device.key;

    platform_jobs main;
    platform_jobs_interval 200ms;
    platform_jobs_timeout 10s;
    platform_jobs_lease 30s;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@platform.test;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth lifts)) ]}
    }
EOF

$t->run;

my $json = JSON::PP->new->canonical;
my $origin = 'http://127.0.0.1:' . $t->port;

my $org = make_org($t, 'Alert client');
my $other = make_org($t, 'Other client');
my $ann = staff_session($t, 'ann@example.org', $org);
my $bob = staff_session($t, 'bob@example.org', $other);

sub req {
    my ($method, $path, $body, $cookie) = @_;
    my $r = $t->req($method, $path,
                    headers => { Cookie => "platform_session=$cookie",
                                 Origin => $origin },
                    defined $body ? (body => $json->encode($body)) : ());
    return ($r->{status}, $t->json($r));
}

my ($st, $b) = req('POST', "/api/lift-orgs/$org/buildings",
                   { name => 'Tower' }, $ann);
my $tower = $b->{id};
my @lifts;
for my $n (1 .. 2) {
    ($st, $b) = req('POST', "/api/lift-orgs/$org/lifts",
                    { serial => "AL-$n", model => 'M', floors => 12,
                      building_id => $tower + 0 }, $ann);
    push @lifts, $b->{id};
}
my %token = map { $_ => mint_token("$dir/device.key", $_, 0) } @lifts;
my $seq = 0;

sub reading {
    my ($lift, %f) = @_;
    my $r = $t->req('POST', '/api/ingest',
                    body => msgpack({ seq => ++$seq, ts => now_ms(),
                                      kind => 'status', %f }),
                    headers => { Authorization => "Bearer $token{$lift}",
                                 'Content-Type' => 'application/msgpack' });
    return $r->{status} == 200 ? $t->json($r)->{accepted} : "$r->{status}";
}

# The alert mails (the sink also gets the sign-in mails): waits until
# there are N, for up to 20 s.
sub alert_mails {
    my ($n) = @_;
    my @m;
    my $deadline = time + 20;
    while (1) {
        @m = grep { /^To: ops\@example\.org\r?$/m } $smtp->messages;
        last if @m >= $n || time > $deadline;
        sleep 0.2;
    }
    return @m;
}

sub alerts {
    my ($query) = @_;
    my ($s, $list) = req('GET', "/api/lift-orgs/$org/alerts$query", undef,
                         $ann);
    return $s == 200 ? $list : [];
}

# ------------------------------------------------------------------ rules

my %rule = (name => 'Machine room hot', scope => 'lift', lift_id => $lifts[0],
            metric => 'temperature', comparison => '>', threshold => 50,
            emails => ['ops@example.org'], webhook => 'ops');

for my $case ([{ %rule, metric => 'speed' }, 'metric'],
              [{ %rule, comparison => '!=' }, 'comparison'],
              [{ %rule, threshold => 'hot' }, 'threshold'],
              [{ %rule, lift_id => 999999 }, 'lift_id'],
              [{ %rule, scope => 'all' }, 'scope'],
              [{ %rule, emails => ['not an address'] }, 'emails'],
              [{ %rule, webhook => 'nowhere' }, 'webhook'],
              [{ %rule, colour => 'red' }, 'colour'],
              [{ %rule, name => '' }, 'name'],
              [{ %rule, metric => 'silence', threshold => 0 }, 'threshold'])
{
    ($st, $b) = req('POST', "/api/lift-orgs/$org/alert-rules", $case->[0],
                    $ann);
    is("$st " . (($b->{error}{detail} // '') =~ s/^field: //r),
       "400 $case->[1]", "a rule with a bad $case->[1]: 400 naming it");
}

($st, $b) = req('POST', "/api/lift-orgs/$org/alert-rules", \%rule, $ann);
is($st, 201, 'a temperature rule: 201');
my $hot = $b->{id};
is($b->{firing}, 0, 'not firing');

($st, $b) = req('POST', "/api/lift-orgs/$org/alert-rules",
                { name => 'A million elevations', scope => 'building',
                  building_id => $tower, metric => 'trips',
                  comparison => '>', threshold => 1_000_000,
                  emails => ['ops@example.org'] }, $ann);
is($st, 201, 'an elevations rule for the building: 201');
my $million = $b->{id};

($st, $b) = req('GET', "/api/lift-orgs/$org/alert-rules", undef, $ann);
is(scalar @$b, 2, 'two rules listed');
($st) = req('GET', "/api/lift-orgs/$other/alert-rules/$hot", undef, $bob);
is($st, 404, "another organisation's rule: 404");
($st) = req('PUT', "/api/lift-orgs/$other/alert-rules/$hot",
            { threshold => 1 }, $bob);
is($st, 404, 'it cannot change it');
($st) = req('GET', "/api/lift-orgs/$org/alert-rules", undef, $bob);
is($st, 403, "nor list this organisation's");

# ------------------------------------------------------------------ firing

is(reading($lifts[0], temperature => '21.5'), 1, 'a cool reading');
is(scalar @{alerts('')}, 0, 'no alert');

is(reading($lifts[0], temperature => '61.5'), 1, 'a hot reading');
my $a = alerts('?state=firing');
is(scalar @$a, 1, 'the alert fires');
is("$a->[0]{rule} $a->[0]{lift} $a->[0]{fired_value}", "$hot $lifts[0] 61.5",
   'for the rule and the lift, with the value');

is(reading($lifts[0], temperature => '75'), 1, 'hotter');
is(reading($lifts[1], temperature => '90'), 1, 'the other lift, hot');
is(scalar @{alerts('')}, 1, 'still one alert: it fires once, for its lift');

my @mails = alert_mails(1);
is(scalar @mails, 1, 'one mail');
like($mails[0], qr/Subject: \[FIRED\] Machine room hot: lift AL-1/,
     'saying what fired');
is($http->wait_count(1, 20), 1, 'one webhook');
my ($req) = $http->requests;
my $wb = decode_json($req->{body});
is("$wb->{event} $wb->{rule} $wb->{serial} $wb->{value}",
   "lift_alert.fired $hot AL-1 61.5", 'the webhook body');
ok($req->{verified}, 'signed');

($st, $b) = req('GET', "/api/lift-orgs/$org/lifts/$lifts[0]/status", undef,
                $ann);
is($st, 200, 'lift status: 200');
is($b->{last_reading}{temperature}, 75, 'the latest reading');
is(scalar @{$b->{alerts}}, 1, 'and its open alert');

is(reading($lifts[0], temperature => '40'), 1, 'cool again');
$a = alerts('');
is("$a->[0]{state} $a->[0]{resolved_value}", 'resolved 40', 'resolved');
@mails = alert_mails(2);
is(scalar @mails, 2, 'a second mail');
like($mails[1], qr/Subject: \[RESOLVED\] Machine room hot/,
     'saying it resolved');
is($http->wait_count(2, 20), 2, 'a second webhook');

is(reading($lifts[0], temperature => '55'), 1, 'hot once more');
is(scalar @{alerts('?state=firing')}, 1, 'fires again');
is(scalar @{alerts("?lift=$lifts[0]")}, 2, 'the history keeps both');

# the cumulative elevations counter
is(reading($lifts[1], kind => 'trip', counters => { trips => 999_999 }), 1,
   'lift 2 at 999,999 elevations');
is(scalar(grep { $_->{rule} == $million } @{alerts('')}), 0, 'no alert');
is(reading($lifts[1], kind => 'trip', counters => { trips => 1_000_001 }), 1,
   'lift 2 at 1,000,001');
$a = [ grep { $_->{rule} == $million } @{alerts('')} ];
is(scalar @$a, 1, 'over a million: fired');
is($a->[0]{lift}, $lifts[1], 'for lift 2');

# ------------------------------------------------------------------ silence

($st, $b) = req('POST', "/api/lift-orgs/$org/alert-rules",
                { name => 'Silent', scope => 'org', metric => 'silence',
                  comparison => '>', threshold => 5 }, $ann);
is($st, 201, 'a silence rule: no reading for 5 s');
my $silent = $b->{id};

# lift 2 keeps reporting, lift 1 stops
my $deadline = time + 40;
my $fired;
while (time < $deadline) {
    reading($lifts[1]);
    $fired = [ grep { $_->{rule} == $silent } @{alerts('?state=firing')} ];
    last if @$fired;
    sleep 0.5;
}
is(scalar @$fired, 1, 'the timer fires it');
is($fired->[0]{lift}, $lifts[0], 'for the lift that stopped');

is(reading($lifts[0]), 1, 'lift 1 reports again');
is(scalar(grep { $_->{rule} == $silent } @{alerts('?state=firing')}), 0,
   'resolved at once');

($st, $b) = req('GET', "/api/lift-orgs/$org/buildings/$tower/status", undef,
                $ann);
is($st, 200, 'building status: 200');
is(join(',', map { $_->{serial} } @{$b->{lifts}}), 'AL-1,AL-2',
   'its lifts');
is($b->{lifts}[1]{last_reading}{counters}{trips}, 1_000_001,
   'with their counters');

($st) = req('GET', "/api/lift-orgs/$other/buildings/$tower/status", undef,
            $bob);
is($st, 404, "another organisation's building: 404");
($st) = req('GET', "/api/lift-orgs/$other/lifts/$lifts[0]/status", undef,
            $bob);
is($st, 404, "another organisation's lift: 404");
($st, $b) = req('GET', "/api/lift-orgs/$other/alerts", undef, $bob);
is_deeply($b, [], 'and no alerts of theirs');

($st, $b) = req('GET', "/api/lift-orgs/$org/alerts?state=open", undef, $ann);
is($st, 400, 'state=open: 400');

# changing or deleting a rule
($st, $b) = req('PUT', "/api/lift-orgs/$org/alert-rules/$hot",
                { threshold => 80 }, $ann);
is("$st $b->{threshold} $b->{scope} $b->{lift_id}", "200 80 lift $lifts[0]",
   'a rule changed, the rest kept');
is($b->{firing}, 0, 'its open alert resolved');
($st) = req('DELETE', "/api/lift-orgs/$org/alert-rules/$silent", undef,
            $ann);
is($st, 200, 'a rule deleted');
($st) = req('GET', "/api/lift-orgs/$org/alert-rules/$silent", undef, $ann);
is($st, 404, 'gone');

done_testing();
