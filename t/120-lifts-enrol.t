#!/usr/bin/perl

# Lift registry and device enrolment (issue 8 items 1-2, sql/018_lifts.sql,
# conf/api/lifts.conf): staff of an organisation create buildings and lifts
# (validation names the field; another organisation's staff get 404 or
# 403); a lift asks for a device code (RFC 8628), polls the token endpoint
# (authorization_pending, slow_down with the interval growing by 5 s,
# access_denied, expired_token, invalid_grant), staff approve the user code
# for a lift, the lift gets its token once; the token is verified by nginx
# (a forged one is 401 without reaching PostgreSQL) and revoked by staff.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Test::Platform qw(field_of);
use LiftTest qw(staff_session make_org now_ms);

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;                   # session.key
$t->key_file('device.key');

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;
    platform_device_key $dir/device.key;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth lifts)) ]}
    }
EOF

$t->run;

my $origin = 'http://127.0.0.1:' . $t->port;
my $json = JSON::PP->new->canonical;

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = %{$o{headers} || {}};
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin;
    }
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

# ------------------------------------------------------------------ registry

my $acme = make_org($t, 'Acme Lifts client');
my $other = make_org($t, 'Other client');

my $ann = staff_session($t, 'ann@example.org', $acme);
my $bob = staff_session($t, 'bob@example.org', $other);

my $r = req('GET', "/api/lift-orgs/$acme/buildings");
is($r->{status}, 401, 'no session: 401');
$r = req('GET', "/api/lift-orgs/$acme/buildings", undef, cookie => $bob);
is($r->{status}, 403, 'staff of another organisation: 403');

$r = req('POST', "/api/lift-orgs/$acme/buildings", { name => '' },
         cookie => $ann);
is(field_of($r), '400 name', 'empty building name: 400 naming the field');

$r = req('POST', "/api/lift-orgs/$acme/buildings",
         { name => 'Tower A', address => '1 Main St' }, cookie => $ann);
is($r->{status}, 201, 'building created: 201');
my $tower = body_of($r)->{id};
ok($tower, 'with an id');

$r = req('PUT', "/api/lift-orgs/$acme/buildings/$tower",
         { name => 'Tower A1' }, cookie => $ann);
is(body_of($r)->{name}, 'Tower A1', 'building renamed');
is(body_of($r)->{address}, '1 Main St', 'address kept');

my %lift = (serial => 'SN-0001', model => 'Vertix 9', floors => 12,
            installed_on => '2021-03-04', building_id => $tower + 0);

for my $bad ([serial => 'bad serial!'], [model => ''], [floors => 1],
             [floors => '12'], [installed_on => '2021-02-30'],
             [building_id => 999999])
{
    $r = req('POST', "/api/lift-orgs/$acme/lifts",
             { %lift, $bad->[0] => $bad->[1] }, cookie => $ann);
    is(field_of($r), "400 $bad->[0]", "lift with a bad $bad->[0]: 400");
}

$r = req('POST', "/api/lift-orgs/$acme/lifts", \%lift, cookie => $ann);
is($r->{status}, 201, 'lift created: 201');
my $l1 = body_of($r);
is_deeply([@$l1{qw(serial model floors installed_on building_id enrolled)}],
          ['SN-0001', 'Vertix 9', 12, '2021-03-04', $tower, JSON::PP::false],
          'the lift as stored');

$r = req('POST', "/api/lift-orgs/$acme/lifts", \%lift, cookie => $ann);
is($r->{status}, 409, 'the same serial again: 409');

$r = req('POST', "/api/lift-orgs/$acme/lifts",
         { %lift, serial => 'SN-0002' }, cookie => $ann);
my $l2 = body_of($r);

$r = req('PUT', "/api/lift-orgs/$acme/lifts/$l2->{id}", { floors => 20 },
         cookie => $ann);
is(body_of($r)->{floors}, 20, 'lift updated');

$r = req('GET', "/api/lift-orgs/$acme/lifts?building=$tower", undef,
         cookie => $ann);
is_deeply([map { $_->{serial} } @{body_of($r)}], ['SN-0001', 'SN-0002'],
          'lifts of the building');

# Bob's building, and tenant isolation both ways.
$r = req('POST', "/api/lift-orgs/$other/buildings", { name => 'B' },
         cookie => $bob);
my $bobs_building = body_of($r)->{id};

$r = req('POST', "/api/lift-orgs/$acme/lifts",
         { %lift, serial => 'SN-X', building_id => $bobs_building + 0 },
         cookie => $ann);
is(field_of($r), '400 building_id', "another organisation's building: 400");

for my $path ("/api/lift-orgs/$other/lifts/$l1->{id}",
              "/api/lift-orgs/$other/buildings/$tower") {
    $r = req('GET', $path, undef, cookie => $bob);
    is($r->{status}, 404, "Bob reading Acme's $path through his org: 404");
    $r = req('DELETE', $path, undef, cookie => $bob);
    is($r->{status}, 404, 'and deleting it: 404');
}

$r = req('DELETE', "/api/lift-orgs/$acme/buildings/$tower", undef,
         cookie => $ann);
is($r->{status}, 409, 'a building with lifts is not deleted: 409');

# ------------------------------------------------------------------ enrolment

$r = req('POST', '/api/devices/authorize', { serial => 'no spaces' });
is($r->{status}, 400, 'authorize with a bad serial: 400');
is(body_of($r)->{error}, 'invalid_request', 'invalid_request');

$r = req('POST', '/api/devices/authorize', { serial => 'SN-0001' });
is($r->{status}, 200, 'authorize: 200');
my $a = body_of($r);
like($a->{user_code}, qr/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/,
     'user code XXXX-XXXX from the base-20 alphabet');
like($a->{device_code}, qr/^[A-Za-z0-9_-]{43}$/, 'a device code');
is($a->{verification_uri}, "$origin/lifts/device.html", 'verification_uri');
is($a->{expires_in}, 600, 'expires_in');
is($a->{interval}, 5, 'interval');
is($r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');

sub token {
    my ($code) = @_;
    my $r = req('POST', '/api/devices/token', { device_code => $code });
    return ($r->{status}, body_of($r));
}

my ($st, $b) = token($a->{device_code});
is("$st $b->{error}", '400 authorization_pending', 'first poll: pending');
($st, $b) = token($a->{device_code});
is("$st $b->{error}", '400 slow_down', 'polling at once again: slow_down');
is($t->psql("SELECT poll_interval FROM lifts.device_authorizations "
            . "WHERE user_code = '" . ($a->{user_code} =~ s/-//r) . "'"),
   10, 'the interval grew by 5 s');

($st, $b) = token('nonsense');
is("$st $b->{error}", '400 invalid_grant', 'an unknown device code');

# Approval: bad input, then another organisation's lift, then the right one.
$r = req('POST', "/api/lift-orgs/$acme/devices/approve",
         { user_code => 'AAAA', lift => $l1->{id} + 0 }, cookie => $ann);
is(field_of($r), '400 user_code', 'a malformed user code: 400');
$r = req('POST', "/api/lift-orgs/$acme/devices/approve",
         { user_code => 'BBBB-BBBB', lift => $l1->{id} + 0 }, cookie => $ann);
is(field_of($r), '404 user_code', 'an unknown user code: 404');
$r = req('POST', "/api/lift-orgs/$other/devices/approve",
         { user_code => $a->{user_code}, lift => $l1->{id} + 0 },
         cookie => $bob);
is(field_of($r), '400 lift', "approving for another organisation's lift: 400");

$r = req('POST', "/api/lift-orgs/$acme/devices/approve",
         { user_code => lc($a->{user_code}), lift => $l1->{id} + 0 },
         cookie => $ann);
is($r->{status}, 200, 'approved (code typed in lower case)');

# wait out the (grown) interval without sleeping: move last_poll back
$t->psql("UPDATE lifts.device_authorizations "
         . "SET last_poll_at = now() - interval '1 minute'");

($st, $b) = token($a->{device_code});
is($st, 200, 'token: 200');
like($b->{access_token}, qr/^lt1\.[A-Za-z0-9_-]{59}$/, 'an access token');
is($b->{token_type}, 'Bearer', 'Bearer');
my $token = $b->{access_token};

($st, $b) = token($a->{device_code});
is("$st $b->{error}", '400 invalid_grant', 'the token is issued once');

# Deny and expiry.
$a = body_of(req('POST', '/api/devices/authorize', { serial => 'SN-0002' }));
$r = req('POST', "/api/lift-orgs/$acme/devices/deny",
         { user_code => $a->{user_code} }, cookie => $ann);
is($r->{status}, 200, 'denied');
($st, $b) = token($a->{device_code});
is("$st $b->{error}", '400 access_denied', 'access_denied');

$a = body_of(req('POST', '/api/devices/authorize', { serial => 'SN-0002' }));
$t->psql("UPDATE lifts.device_authorizations SET expires_at = now() "
         . "- interval '1 second' WHERE state = 'pending'");
($st, $b) = token($a->{device_code});
is("$st $b->{error}", '400 expired_token', 'expired_token');
$r = req('POST', "/api/lift-orgs/$acme/devices/approve",
         { user_code => $a->{user_code}, lift => $l2->{id} + 0 },
         cookie => $ann);
is($r->{status}, 404, 'an expired code cannot be approved');

# ------------------------------------------------------------------ the token

my $reading = { seq => 1, ts => now_ms(), kind => 'status' };

sub ingest {
    my ($tok, $body) = @_;
    return req('POST', '/api/ingest', $body,
               headers => { Authorization => "Bearer $tok" });
}

$r = ingest($token, $reading);
is($r->{status}, 200, 'the token is accepted by the ingest endpoint');
is(body_of($r)->{accepted}, 1, 'one reading accepted');

my $forged = $token;
substr($forged, -5, 1) = substr($forged, -5, 1) eq 'A' ? 'B' : 'A';
$r = ingest($forged, $reading);
is($r->{status}, 401, 'a forged token: 401');
is(body_of($r)->{error}{code}, 'invalid_token', 'invalid_token');

$r = ingest('nope', $reading);
is($r->{status}, 401, 'garbage: 401');

$r = req('POST', '/api/ingest', $reading);
is($r->{status}, 401, 'no token: 401');

is(body_of(req('GET', "/api/lift-orgs/$acme/lifts/$l1->{id}", undef,
               cookie => $ann))->{enrolled}, JSON::PP::true, 'lift enrolled');

$r = req('POST', "/api/lift-orgs/$acme/lifts/$l1->{id}/revoke", undef,
         cookie => $ann);
is($r->{status}, 200, 'revoked by staff');

$r = ingest($token, { %$reading, seq => 2 });
is($r->{status}, 401, 'a revoked token: 401 at the next write');
is($t->psql("SELECT count(*) FROM lifts.readings"), 1,
   'nothing stored with the revoked token');

$r = req('POST', "/api/lift-orgs/$other/lifts/$l1->{id}/revoke", undef,
         cookie => $bob);
is($r->{status}, 404, "revoking another organisation's lift: 404");

done_testing;
