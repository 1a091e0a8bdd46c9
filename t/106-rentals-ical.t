#!/usr/bin/perl

# Holiday rentals: the iCal feed of a property and the import of channels'
# feeds (sql/022_rentals_comms.sql, conf/api/rentals_comms.conf), with
# nginx, its jobs runner and PostgreSQL.  The imports are `call` jobs (GET)
# through a platform_jobs_service that points at this nginx, which serves
# the export itself and the samples of t/data/ical/.
#
#   export: text/calendar, CRLF, folded at 75 octets, escaped, all-day
#     events with an exclusive end, stable UIDs; rotation; another
#     business: 404
#   round trip: property A's feed imported into property B gives B the same
#     blocked dates (and the public calendar shows them); a stay cancelled
#     in A is gone from B at the next import
#   real-world-shaped samples: Airbnb (CRLF, folded UID, "Reserved",
#     "Not available", back to back), Booking.com (LF, "CLOSED - Not
#     available", a duplicated event, overlapping events), Google-style
#     (VTIMEZONE, TZID, UTC, VALARM, a cancelled event)
#   malformed feed (cut short, an HTML error page, HTTP 404): the import is
#     failed with the reason, the last good blocks stay

use strict;
use warnings;

use Test::More;
use Test::Platform qw(wait_for);
use File::Copy qw(copy);
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $port = $t->port;
my $origin = "http://127.0.0.1:$port";
my $samples = $t->root . '/t/data/ical';

$t->key_file;
mkdir "$dir/feeds" or die "feeds: $!\n";

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 4; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_jobs_timeout 5s;
    platform_jobs_lease 10s;
    platform_smtp_url smtp://127.0.0.1:9;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service ical_local http://127.0.0.1:%%PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        @{[ $t->api_conf(qw(auth rentals rentals_comms)) ]}

        # feeds of other sites, as files
        location /feeds/ {
            alias $dir/feeds/;
            default_type text/calendar;
        }
    }
EOF

$t->ignore_log(qr/SMTP connect\(\) to 127\.0\.0\.1:9 failed/);
$t->run;

$t->psql("INSERT INTO rentals.ical_hosts (origin, service) "
         . "VALUES ('$origin', 'ical_local')");

my $json = JSON::PP->new->canonical;

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = (Origin => $origin);
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }

sub day { strftime('%Y-%m-%d', gmtime(time + $_[0] * 86400)) }

sub feed_file {
    my ($name, $sample) = @_;
    copy("$samples/$sample", "$dir/feeds/$name.tmp") or die "$sample: $!\n";
    rename "$dir/feeds/$name.tmp", "$dir/feeds/$name" or die "$name: $!\n";
}

my ($ann, $bob);

sub feed_of {
    my ($pid, $fid) = @_;
    my ($f) = grep { $_->{id} == $fid }
              @{body_of(get("/api/owner/properties/$pid/ical",
                            cookie => $ann))->{feeds} || []};
    return $f || {};
}

# Imports now and waits for the answer to be recorded.
sub import_now {
    my ($pid, $fid) = @_;
    my $before = feed_of($pid, $fid)->{last_import_at} // '';
    my $r = post("/api/owner/properties/$pid/ical/feeds/$fid/import", undef,
                 cookie => $ann);
    is($r->{status}, 202, "import feed $fid: 202");
    return wait_for(20, sub {
        my $f = feed_of($pid, $fid);
        ($f->{last_import_at} // '') ne $before ? $f : undef;
    }) || {};
}

# The property's blocks (confirmed) as "check_in..check_out source".
sub blocks {
    my ($pid) = @_;
    my $r = get("/api/owner/bookings?property=$pid&from=2000-01-01",
                cookie => $ann);
    return [map { "$_->{check_in}..$_->{check_out} $_->{source}" }
            grep { $_->{kind} eq 'block' } @{body_of($r)->{bookings} || []}];
}

# ------------------------------------------------------------------ set-up

$ann = $t->sign_in('ann@example.org');
post('/api/rentals/signup', { email => 'ann@example.org',
                              business_name => 'Ann Stays',
                              slug => 'ann-ical' }, cookie => $ann);
$bob = $t->sign_in('bob@example.org');
post('/api/rentals/signup', { email => 'bob@example.org',
                              business_name => 'Bob', slug => 'bob-ical' },
     cookie => $bob);

sub property {
    my (%o) = @_;
    my $r = post('/api/owner/properties',
                 { capacity => 4, price_minor => 10000, currency => 'EUR',
                   %o }, cookie => $ann);
    is($r->{status}, 201, "property $o{name}") or diag($r->{content});
    return body_of($r)->{id};
}

my $long = 'Sea View, the blue house; à deux pas de la plage — '
           . 'with a garden and a very long name indeed';
my $pa = property(name => $long);
my $pb = property(name => 'Copy of A');
my $pc = property(name => 'Airbnb and Booking');
my $pd = property(name => 'Google', time_zone => 'Europe/Paris');

# A: a booking, a block, a cancelled booking
my @a;
for my $s ([5, 8, 'booking'], [8, 10, 'block'], [20, 27, 'booking'],
           [30, 31, 'booking'])
{
    my $r = post("/api/owner/properties/$pa/bookings",
                 { check_in => day($s->[0]), check_out => day($s->[1]),
                   kind => $s->[2],
                   $s->[2] eq 'booking' ? (guest_name => 'Secret Guest') : () },
                 cookie => $ann);
    is($r->{status}, 201, "A: $s->[2] $s->[0]..$s->[1]");
    push @a, body_of($r)->{id};
}
post("/api/owner/bookings/$a[3]/cancel", undef, cookie => $ann);

# ------------------------------------------------------------------ export

my $r = get("/api/owner/properties/$pa/ical", cookie => $ann);
is($r->{status}, 200, 'the feed address');
my $url = body_of($r)->{export_url};
like($url, qr{^\Q$origin\E/ical/[0-9a-f]{32}\.ics$}, 'a secret address');
my ($path) = $url =~ m{^\Q$origin\E(/.*)$};

is(get("/api/owner/properties/$pa/ical", cookie => $bob)->{status}, 404,
   'bob: ann\'s feed address 404');

$r = $t->req('GET', $path);
is($r->{status}, 200, 'the feed');
like($r->{headers}{'content-type'}, qr{^text/calendar}, 'text/calendar');
my $ics = $r->{content};
ok($ics !~ /(?<!\r)\n/ && $ics =~ /\r\n\z/, 'CRLF line ends only');
ok(!grep({ length($_) > 75 } split /\r\n/, $ics), 'no line over 75 octets');
(my $unfolded = $ics) =~ s/\r\n[ \t]//g;
like($unfolded, qr/^X-WR-CALNAME:Sea View\\, the blue house\\; à deux pas/m,
     'folded, then escaped text');
my @ev = $unfolded =~ /BEGIN:VEVENT\r\n(.*?)END:VEVENT/gs;
is(scalar @ev, 3, 'three events (the cancelled stay is left out)');
like($ev[0], qr/^DTSTART;VALUE=DATE:\d{8}\r$/m, 'all-day start');
my ($s0) = $ev[0] =~ /DTSTART;VALUE=DATE:(\d{8})/;
my ($e0) = $ev[0] =~ /DTEND;VALUE=DATE:(\d{8})/;
(my $d5 = day(5)) =~ s/-//g;
(my $d8 = day(8)) =~ s/-//g;
is("$s0..$e0", "$d5..$d8", 'DTEND is the check-out day (exclusive)');
like($ev[1], qr/SUMMARY:Not available/, 'a block: Not available');
unlike($unfolded, qr/Secret Guest/, 'no guest details');
my ($uid) = $ev[0] =~ /^UID:(\S+)\r$/m;
like($t->req('GET', $path)->{content}, qr/\Q$uid\E/, 'UIDs are stable');

# ------------------------------------------------------------------ round trip

$r = post("/api/owner/properties/$pb/ical/feeds",
          { channel => 'airbnb', url => $url }, cookie => $ann);
is($r->{status}, 201, 'B imports A\'s feed') or diag($r->{content});
my $fb = body_of($r)->{id};
ok(wait_for(20, sub { (feed_of($pb, $fb)->{status} // '') eq 'ok' }),
   'imported');
is_deeply(blocks($pb),
          [map { "$_ airbnb" } day(5) . '..' . day(8), day(8) . '..' . day(10),
                               day(20) . '..' . day(27)],
          'B has A\'s dates blocked');
is_deeply([map { "$_->{check_in}..$_->{check_out}" } @{body_of(get(
              "/api/b/ann-ical/properties/$pb?from=" . day(0) . '&to='
              . day(60)))->{availability}{booked} || []}],
          [day(5) . '..' . day(8), day(8) . '..' . day(10),
           day(20) . '..' . day(27)],
          'and its public calendar shows them');

post("/api/owner/bookings/$a[2]/cancel", undef, cookie => $ann);
my $f = import_now($pb, $fb);
is($f->{status}, 'ok', 'imported again');
is_deeply(blocks($pb),
          [map { "$_ airbnb" } day(5) . '..' . day(8), day(8) . '..' . day(10)],
          'cancelled in A: gone from B');

is(post("/api/owner/properties/$pb/ical/feeds",
        { channel => 'airbnb', url => $url }, cookie => $ann)->{status},
   409, 'a second airbnb feed: 409');
is(post("/api/owner/properties/$pb/ical/feeds",
        { channel => 'booking_com', url => 'https://example.com/x.ics' },
        cookie => $ann)->{status}, 400, 'a host nginx cannot reach: 400');
is(post("/api/owner/properties/$pb/ical/feeds",
        { channel => 'airbnb', url => $url }, cookie => $bob)->{status},
   404, 'bob: a feed on ann\'s property 404');
is(post("/api/owner/properties/$pb/ical/feeds/$fb/import", undef,
        cookie => $bob)->{status}, 404, 'bob: importing ann\'s feed 404');

# rotation: the old address is gone
$r = post("/api/owner/properties/$pa/ical/rotate", undef, cookie => $ann);
is($r->{status}, 200, 'rotate the address');
isnt(body_of($r)->{export_url}, $url, 'a new address');
is($t->req('GET', $path)->{status}, 404, 'the old one: 404');

# ------------------------------------------------------------------ samples

feed_file('airbnb.ics', 'airbnb.ics');
feed_file('booking.ics', 'booking_com.ics');
feed_file('google.ics', 'google.ics');

$r = post("/api/owner/properties/$pc/ical/feeds",
          { channel => 'airbnb', url => "$origin/feeds/airbnb.ics" },
          cookie => $ann);
my $fc1 = body_of($r)->{id};
$r = post("/api/owner/properties/$pc/ical/feeds",
          { channel => 'booking_com', url => "$origin/feeds/booking.ics?t=x" },
          cookie => $ann);
my $fc2 = body_of($r)->{id};
$r = post("/api/owner/properties/$pd/ical/feeds",
          { channel => 'airbnb', url => "$origin/feeds/google.ics" },
          cookie => $ann);
my $fd = body_of($r)->{id};

ok(wait_for(20, sub {
       (feed_of($pc, $fc1)->{status} // '') eq 'ok'
       && (feed_of($pc, $fc2)->{status} // '') eq 'ok'
       && (feed_of($pd, $fd)->{status} // '') eq 'ok' }),
   'the three samples imported');

is_deeply(blocks($pc),
          ['2035-06-08..2035-06-12 airbnb', '2035-06-20..2035-07-01 airbnb',
           '2035-07-01..2035-07-04 airbnb',
           '2035-07-15..2035-07-20 booking_com'],
          'Airbnb: Reserved, Not available, back to back; Booking.com: '
          . 'the duplicate once, overlapping events as one block');
is(feed_of($pc, $fc2)->{events}, 2, 'Booking.com: two distinct events');
is_deeply(blocks($pd),
          ['2035-08-03..2035-08-06 airbnb', '2035-08-10..2035-08-11 airbnb'],
          'Google: TZID and UTC times as local days, the cancelled event '
          . 'left out, the alarm ignored');
is($t->psql("SELECT note FROM rentals.bookings WHERE property_id = $pd "
            . "AND lower(stay) = '2035-08-03'"),
   'Blocked, family visit; no guests', 'the summary unescaped');
is($t->psql("SELECT count(*) FROM rentals.bookings WHERE property_id = $pc "
            . "AND external_id = '1418fb94e984-0d8b7d7b5e7e4f3c8a2b9e0f8a1b2c3d"
            . "4e5f60718293a4b5c6d7e8f9a0b1c2d3\@airbnb.com'"), 1,
   'a folded UID is read whole');

# the same feed again: nothing changes
my $ids = $t->psql("SELECT string_agg(id::text, ',' ORDER BY id) "
                   . "FROM rentals.bookings WHERE property_id = $pc");
import_now($pc, $fc1);
is($t->psql("SELECT string_agg(id::text, ',' ORDER BY id) "
            . "FROM rentals.bookings WHERE property_id = $pc"), $ids,
   'imported twice: the same rows');

# ------------------------------------------------------------------ malformed

my @good = @{blocks($pc)};
for my $bad (['truncated.ics', qr/^the VEVENT of line 4 is not closed/],
             ['error.html', qr/^not an iCalendar file/])
{
    feed_file('airbnb.ics', $bad->[0]);
    $f = import_now($pc, $fc1);
    is($f->{status}, 'failed', "$bad->[0]: failed");
    like($f->{last_error} // '', $bad->[1], "$bad->[0]: the reason");
    is_deeply(blocks($pc), \@good, "$bad->[0]: the last good blocks kept");
}
unlink "$dir/feeds/airbnb.ics";
$f = import_now($pc, $fc1);
is($f->{last_error}, 'the feed answered HTTP status 404', 'a 404: failed');
is_deeply(blocks($pc), \@good, 'blocks kept');

feed_file('airbnb.ics', 'airbnb.ics');
$f = import_now($pc, $fc1);
is($f->{status}, 'ok', 'good again: ok');

# removing a feed cancels its blocks to come
$r = req('DELETE', "/api/owner/properties/$pc/ical/feeds/$fc1", undef,
         cookie => $ann);
is(body_of($r)->{blocks_cancelled}, 3, 'feed removed: its 3 blocks cancelled');
is_deeply(blocks($pc), ['2035-07-15..2035-07-20 booking_com'],
          'the other channel\'s stay');
is($t->psql("SELECT count(*) FROM jobs.jobs WHERE key = 'ical-feed:$fc1' "
            . "AND state = 'pending'"), 0, 'its import is no longer queued');

done_testing();
