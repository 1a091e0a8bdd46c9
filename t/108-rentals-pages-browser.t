#!/usr/bin/perl

# The rentals calendars and the channels page in headless Chromium
# (t/browser/rentals-pages.mjs):
#   owner     the calendar of bookings on /owner/ shows a booking on its
#             nights, a click shows its details; /owner/channels.html
#             saves a channel's keys (then shows the last four only),
#             lists a dead push (its receiver refuses connections) and
#             retries it, resolves a booking conflict
#   guest     the availability calendar of the public property page:
#             taken nights struck out, arrival and departure picked by
#             clicking, the price asked for at once

use strict;
use warnings;

use Test::More;
use Test::Platform qw(wait_for browser_dir);
use JSON::PP;

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = browser_dir();
my $tdir = $t->testdir;

$t->key_file;
$t->key_file('secretbox.key');

# The test-only mailbox (as t/107): the newest mail job to an address.
$t->psql(<<'SQL');
CREATE FUNCTION api.t_last_mail(email text, template text) RETURNS json
LANGUAGE sql SECURITY DEFINER AS $$
    SELECT json_build_object('template', payload->>'template',
                             'link', payload->'vars'->>'link',
                             'vars', payload->'vars')
    FROM jobs.jobs
    WHERE kind = 'mail'
      AND payload->>'to' = lower(app.url_decode(email))
      AND (coalesce(template, '') = ''
           OR payload->>'template' = template)
    ORDER BY id DESC LIMIT 1
$$;
SQL

# Both channels push to a port nobody listens on: every push fails.
$t->http_conf(<<"CONF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $tdir/session.key;
    platform_session_secure off;
    platform_secretbox_key $tdir/secretbox.key;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_jobs_timeout 5s;
    platform_smtp_url smtp://127.0.0.1:9;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service channel_airbnb http://127.0.0.1:9/airbnb;
    platform_jobs_service channel_booking_com http://127.0.0.1:9/bcom;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        @{[ $t->api_conf(qw(core auth rentals rentals_channels)) ]}

        # the pages as conf/nginx.conf serves them
        location ~ "^/b/[a-z0-9-]{3,63}/(?:index\\.html)?\$" {
            try_files /b/index.html =404;
        }
        location ~ "^/b/[a-z0-9-]{3,63}/(property|booking)\\.html\$" {
            try_files /b/\$1.html =404;
        }
        location = /test/last-mail {
            platform_query GET api.t_last_mail(\$arg_email, \$arg_template);
        }
    }
CONF

$t->psql('UPDATE jobs.settings SET backoff_base_seconds = 0.1, '
         . 'backoff_max_seconds = 0.5');
$t->psql(q{UPDATE rentals.channel_kinds SET push_delay = '0.3 s',
           max_attempts = 1});
$t->ignore_log(qr/connect\(\) to 127\.0\.0\.1:9 failed/);
$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
my $json = JSON::PP->new->canonical;

sub req {
    my ($method, $path, $body, $cookie) = @_;
    return $t->req($method, $path,
                   headers => { Origin => $base,
                                $cookie ? (Cookie => "platform_session=$cookie")
                                        : () },
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub day { $t->psql("SELECT current_date + $_[0]") }

my $ann = $t->sign_in('ann@example.org');
is(req('POST', '/api/rentals/signup', { email => 'ann@example.org',
       business_name => 'Ann Stays', slug => 'ann-pages' }, $ann)->{status},
   201, 'ann runs a business');
my $r = req('POST', '/api/owner/properties',
            { name => 'Sea View', capacity => 4, price_minor => 10000,
              currency => 'EUR' }, $ann);
my $pid = ($t->json($r) || {})->{id};
ok($pid, 'with a home');

# Booking.com connected over HTTP; its pushes fail and die.
is(req('PUT', '/api/owner/channels/booking_com',
       { api_key => 'bcom-key-0000-9876', webhook_secret => 'whsec_bcom_1' },
       $ann)->{status}, 201, 'booking.com connected');

my ($in, $out) = (day(10), day(12));
is(req('POST', "/api/owner/properties/$pid/bookings",
       { check_in => $in, check_out => $out, kind => 'booking',
         source => 'airbnb', external_id => 'HM108',
         guest_name => 'Carla Guest', guest_email => 'carla@example.org',
         guests => 2 }, $ann)->{status}, 201, 'a booking on days 10-12');

ok(wait_for(60, sub {
    $t->psql("SELECT count(*) FROM jobs.jobs WHERE kind = 'call' "
             . "AND state = 'dead'") > 0 }), 'a push died');

$t->psql("INSERT INTO rentals.booking_errors (business_id, property_id, "
         . "channel, event_id, external_id, check_in, check_out, guest_name, "
         . "reason) SELECT business_id, id, 'airbnb', 'evt_108', 'HM999', "
         . "'$in', '$out', 'Dan Double', 'the dates are taken' "
         . "FROM rentals.properties WHERE id = $pid");

is(req('POST', '/api/auth/link', { email => 'ann@example.org',
                                   return_path => '/owner/' })->{status}, 202,
   'a sign-in link for ann to /owner/');

$ENV{PAGES_PROPERTY} = $pid;
$ENV{PAGES_BOOKED_IN} = $in;
$ENV{PAGES_BOOKED_OUT} = $out;
$ENV{PAGES_IN} = day(20);
$ENV{PAGES_OUT} = day(23);

my $res = `node '$dir/rentals-pages.mjs' '$base' owner guest 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $all = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;
is($rc, 0, 'rentals-pages.mjs finished') or diag($res);
my $o = ($all || {})->{owner} || {};
my $g = ($all || {})->{guest} || {};

# ---- owner
is_deeply($o->{errors}, [], 'owner: no script errors or failed loads')
    or diag(explain($o->{errors}));
is_deeply($o->{steps}, ['calendar', 'detail', 'keys', 'dead', 'resolve'],
          'owner: every step ran');
like($o->{day_in} // '', qr/Sea View: Carla Guest \(airbnb\)/,
     'the arrival night shows the booking');
like($o->{day_last} // '', qr/Carla Guest/, 'so does its last night');
unlike($o->{day_out} // 'Carla', qr/Carla/, 'not its departure day');
unlike($o->{day_before} // 'Carla', qr/Carla/, 'nor the day before');
like($o->{detail} // '', qr/confirmed/, 'details: the status');
like($o->{detail} // '', qr/carla\@example\.org/, 'the guest');
like($o->{detail} // '', qr/Departure/, 'the dates');

like($o->{bcom_before} // '', qr/set, ending 9876/, 'booking.com: last four');
like($o->{airbnb_before} // '', qr/not set/, 'airbnb not set');
like($o->{airbnb_after} // '', qr/set, ending 4321/, 'airbnb key saved: last four');
unlike($o->{page_after} // 'abnb-secret-key', qr/abnb-secret-key|whsec_abnb/,
       'no secret on the page');
is($t->psql("SELECT api_key_last4 FROM rentals.channels WHERE kind = 'airbnb'"),
   '4321', 'stored sealed with its last four');
unlike($t->psql("SELECT api_key_sealed::text || webhook_secret_sealed::text "
                . "FROM rentals.channels WHERE kind = 'airbnb'"),
       qr/abnb-secret-key|whsec_abnb/, 'not in plain text');

like($o->{dead} // '', qr/booking_com.*home #$pid/s, 'the dead push listed');
like($o->{dead_message} // '', qr/Queued again/, 'retried');
like($o->{errors_before} // '', qr/Dan Double.*the dates are taken/s,
     'the booking conflict listed');
like($o->{errors_after} // '', qr/None open/, 'resolved');
is($t->psql("SELECT resolution FROM rentals.booking_errors "
            . "WHERE event_id = 'evt_108' AND resolved_at IS NOT NULL"),
   'Moved Dan', 'with the note');

# ---- guest
is_deeply($g->{errors}, [], 'guest: no script errors or failed loads')
    or diag(explain($g->{errors}));
is_deeply($g->{steps}, ['calendar', 'arrival', 'departure', 'quote'],
          'guest: every step ran');
like($g->{booked_label} // '', qr/taken/, 'a booked night is taken');
like($g->{booked_out_label} // '', qr/free/,
     'its departure day is free');
is($g->{focused}, $ENV{PAGES_IN}, 'the arrow key moves to the next day');
like($g->{arrival_label} // '', qr/arrival/, 'the arrival picked by Enter');
is($g->{check_in}, $ENV{PAGES_IN}, 'in the form');
is($g->{check_out}, $ENV{PAGES_OUT}, 'the departure too');
like($g->{price} // '', qr/^3 nights: /, 'and the price of 3 nights');
like($g->{refused} // '', qr/taken/,
     'a stay over taken nights is not picked');

done_testing;
