#!/usr/bin/perl

# Holiday rentals, channels (issue 7 item 5; sql/021_rentals_channels.sql,
# conf/api/rentals_channels.conf, ngx_platform_seal.c):
#
#   keys: PUT seals the API key and webhook secret in nginx
#     (platform_seal), the database holds no plaintext, GET shows only
#     "set" and the key's last four characters
#   inbound webhooks signed with the stored secret (X-Channel-Signature):
#     create, change, cancel; a replayed event id changes nothing; a bad
#     signature, a stale timestamp, no header -> 401 and nothing written
#   a conflicting inbound stay -> a booking error, mailed to the owners;
#     listed and resolved by the owner
#   outbound: a booking change pushes the property's availability to the
#     channel's service (a call job) with the API key opened by the runner;
#     ten changes at once make one push
#   a failing receiver: retried, dead, listed, retried by the owner
#   tenant isolation: another owner sees none of it (404)

use strict;
use warnings;

use Test::More;
use Test::Platform qw(wait_for field_of);
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Digest::SHA qw(hmac_sha256_hex);
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $API_KEY = 'ak_live_103channelsKEY9876';
my $SECRET = 'whsec_103channelsSecretXYZ0123';

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $port = $t->port;
my $origin = "http://127.0.0.1:$port";

$t->key_file;
$t->key_file('secretbox.key');

my $smtp = $t->smtp_sink;
my $sink = $t->http_sink;
my ($SP, $HP) = ($smtp->port, $sink->port);

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 4; }

    platform_session_key $dir/session.key;
    platform_session_secure off;
    platform_secretbox_key $dir/secretbox.key;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_jobs_batch 50;
    platform_jobs_timeout 5s;
    platform_jobs_lease 10s;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service channel_airbnb http://127.0.0.1:$HP/airbnb;
    platform_jobs_service channel_booking_com http://127.0.0.1:$HP/bcom;

    server {
        listen 127.0.0.1:%%PORT%%;
        @{[ $t->api_conf(qw(auth rentals rentals_channels)) ]}
    }
EOF

$t->psql('UPDATE jobs.settings SET backoff_base_seconds = 0.1, '
         . 'backoff_max_seconds = 0.5');
$t->psql(q{UPDATE rentals.channel_kinds SET push_delay = '0.3 s',
           max_attempts = 2});
$t->run;

my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = (Origin => $origin, %{$o{headers} || {}});
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }
sub sql  { $t->psql(@_) }

sub mails_to {
    my ($address) = @_;
    my @out;
    for my $msg ($smtp->messages) {
        next unless $msg =~ /^To:.*\Q$address\E/mi;
        my ($subject) = $msg =~ /^Subject: (.*?)\r$/m;
        my $text = '';
        while ($msg =~ /\r\n\r\n([A-Za-z0-9+\/=\r\n]{40,}?)(?:\r\n--|\z)/g) {
            $text .= decode_base64($1) . "\n";
        }
        push @out, { subject => $subject, text => $text };
    }
    return @out;
}

sub day { strftime('%Y-%m-%d', gmtime(time + $_[0] * 86400)) }

# A webhook as a channel sends it: the signature over "<t>.<raw body>".
sub hook {
    my ($business, $kind, $event, %o) = @_;
    my $body = ref $event ? $json->encode($event) : $event;
    my $ts = $o{ts} // int(time);
    my $sig = hmac_sha256_hex("$ts.$body", $o{secret} // $SECRET);
    my %h = defined $o{header} ? (%{$o{header}})
          : ('X-Channel-Signature' => "t=$ts,v1=$sig");
    return $t->req('POST', "/api/channels/$business/$kind/webhook",
                   headers => \%h, body => $body);
}

sub bookings_of {
    my ($property) = @_;
    return sql("SELECT coalesce(string_agg(external_id || ':' || status "
               . "|| ':' || lower(stay) || ':' || upper(stay), ' ' "
               . "ORDER BY id), '') FROM rentals.bookings "
               . "WHERE property_id = $property AND source = 'airbnb'");
}

sub pushes {
    my ($path_re) = @_;
    return grep { $_->{path} =~ $path_re } $sink->requests;
}

# ------------------------------------------------------------------ set-up

my $ann = $t->sign_in('ann@example.org');
my $r = post('/api/rentals/signup', { email => 'ann@example.org',
                                      business_name => 'Ann Stays',
                                      slug => 'ann-stays' }, cookie => $ann);
is($r->{status}, 201, 'ann runs ann-stays');
my $biz = sql(q{SELECT id FROM rentals.businesses WHERE slug = 'ann-stays'});

$r = post('/api/owner/properties',
          { name => 'Sea View', capacity => 4, price_minor => 10000,
            currency => 'EUR' }, cookie => $ann);
my $pa = body_of($r)->{id} or die "property: $r->{content}\n";

my $bob = $t->sign_in('bob@example.org');
post('/api/rentals/signup', { email => 'bob@example.org',
                              business_name => 'Bob', slug => 'bob-lets' },
     cookie => $bob);
$r = post('/api/owner/properties',
          { name => 'Bob Flat', capacity => 2, price_minor => 9000,
            currency => 'EUR' }, cookie => $bob);
my $pb = body_of($r)->{id};

# ------------------------------------------------------------------ keys

$r = get('/api/owner/channels', cookie => $ann);
is($r->{status}, 200, 'channels listed');
is(join(',', map { "$_->{kind}:" . ($_->{connected} ? 1 : 0) }
             @{body_of($r)->{channels}}),
   'airbnb:0,booking_com:0', 'two kinds, none connected');

is(field_of(req('PUT', '/api/owner/channels/airbnb',
                { api_key => $API_KEY }, cookie => $ann)),
   '400 webhook_secret', 'connecting needs both secrets');
is(field_of(req('PUT', '/api/owner/channels/airbnb',
                { api_key => { sealed => 'x' x 60, last4 => 'abcd' },
                  webhook_secret => $SECRET }, cookie => $ann)),
   '400 -', 'a client cannot send a "sealed" value of its own');
like(body_of(req('PUT', '/api/owner/channels/airbnb',
                 { api_key => "bad\\nkey", webhook_secret => $SECRET },
                 cookie => $ann))->{error}{message} // '',
     qr/^api_key must be a string/, 'an escape in a secret: 400 api_key');
like(body_of(req('PUT', '/api/owner/channels/airbnb',
                 { api_key => 12345678, webhook_secret => $SECRET },
                 cookie => $ann))->{error}{message} // '',
     qr/^api_key must be a string/, 'a number for a secret: 400 api_key');
is(req('PUT', '/api/owner/channels/airbnb', '{"api_key": "abc"',
       cookie => $ann)->{status}, 400, 'a body that is not JSON: 400');
is(req('PUT', '/api/owner/channels/airbnb', '[1, 2]',
       cookie => $ann)->{status}, 400, 'an array: 400');
is(sql(q{SELECT count(*) FROM rentals.channels}), 0, 'nothing stored');
is(req('PUT', '/api/owner/channels/nochannel',
       { api_key => $API_KEY, webhook_secret => $SECRET },
       cookie => $ann)->{status}, 404, 'unknown kind: 404');
is(field_of(req('PUT', '/api/owner/channels/airbnb',
                { api_key => $API_KEY, webhook_secret => $SECRET,
                  colour => 'red' }, cookie => $ann)),
   '400 colour', 'unknown field named');

$r = req('PUT', '/api/owner/channels/airbnb',
         { api_key => $API_KEY, webhook_secret => $SECRET }, cookie => $ann);
is($r->{status}, 201, 'airbnb connected: 201');
my $c = body_of($r);
is($c->{api_key}{last4}, '9876', 'the answer shows the last four');
ok($c->{api_key}{set} && $c->{webhook_secret}{set}, 'both set');
unlike($r->{content}, qr/\Q$API_KEY\E|\Q$SECRET\E|sealed/,
       'no secret, sealed or not, in the answer');
is($c->{webhook_path}, '/api/channels/ann-stays/airbnb/webhook',
   'the webhook address to give the channel');

$r = get('/api/owner/channels', cookie => $ann);
unlike($r->{content}, qr/\Q$API_KEY\E|\Q$SECRET\E|sealed/,
       'GET shows no secret');
is(join(',', map { "$_->{kind}:" . ($_->{connected} ? 1 : 0) . ':'
                   . ($_->{api_key}{last4} // '-') }
             @{body_of($r)->{channels}}),
   'airbnb:1:9876,booking_com:0:-', 'GET: connected, masked');

my $dump = sql(q{SELECT row_to_json(c)::text FROM rentals.channels c});
unlike($dump, qr/\Q$API_KEY\E/, 'the database holds no plaintext API key');
unlike($dump, qr/\Q$SECRET\E/, 'nor the webhook secret');
unlike($dump, qr/\Q@{[substr($API_KEY, 0, 12)]}\E/, 'nor a piece of it');
my $sealed = sql(q{SELECT api_key_sealed FROM rentals.channels});
my $raw = decode_base64($sealed);
is(length($raw), 24 + 16 + length($API_KEY),
   'sealed: nonce, MAC and ciphertext');
unlike($raw, qr/\Q$API_KEY\E/, 'the ciphertext is not the key');

my $jobs = sql(q{SELECT coalesce(string_agg(payload::text, ' '), '')
                 FROM jobs.jobs});
unlike($jobs, qr/\Q$API_KEY\E/, 'no plaintext key in any job');

# updating one secret keeps the other
my $old_secret = sql(q{SELECT webhook_secret_sealed FROM rentals.channels});
$r = req('PUT', '/api/owner/channels/airbnb',
         { api_key => "${API_KEY}X1234" }, cookie => $ann);
is($r->{status}, 200, 'API key replaced: 200');
is(body_of($r)->{api_key}{last4}, '1234', 'new last four');
is(sql(q{SELECT webhook_secret_sealed FROM rentals.channels}), $old_secret,
   'the webhook secret kept');
req('PUT', '/api/owner/channels/airbnb', { api_key => $API_KEY },
    cookie => $ann);

# ------------------------------------------------------------------ inbound

my %created = (id => 'evt_1', type => 'booking.created',
               booking => { id => 'HM1', property_id => $pa + 0,
                            check_in => day(10), check_out => day(13),
                            guest_name => 'Gus Guest', guests => 2 });

# refused before SQL runs: nothing written
$r = hook('ann-stays', 'airbnb', \%created, secret => 'whsec_wrong');
is($r->{status}, 401, 'wrong secret: 401') or diag $r->{content};
$r = hook('ann-stays', 'airbnb', \%created, ts => int(time) - 600);
is($r->{status}, 401, 'stale timestamp: 401');
$r = hook('ann-stays', 'airbnb', \%created, ts => int(time) + 600);
is($r->{status}, 401, 'timestamp from the future: 401');
$r = hook('ann-stays', 'airbnb', \%created, header => {});
is($r->{status}, 401, 'no signature header: 401');
$r = hook('ann-stays', 'airbnb', \%created,
          header => { 'X-Channel-Signature' => 't=abc,v1=00' });
is($r->{status}, 401, 'garbled header: 401');
{
    my $ts = int(time);
    my $body = $json->encode(\%created);
    my $sig = hmac_sha256_hex("$ts.$body", $SECRET);
    $r = $t->req('POST', '/api/channels/ann-stays/airbnb/webhook',
                 headers => { 'X-Channel-Signature' => "t=$ts,v1=$sig" },
                 body => $body . ' ');
    is($r->{status}, 401, 'a body changed after signing: 401');
}
is(sql(q{SELECT count(*) FROM rentals.channel_events}), 0,
   'no event recorded');
is(bookings_of($pa), '', 'no booking written');

$r = hook('ann-stays', 'booking_com', \%created);
is($r->{status}, 404, 'a channel not connected: 404');
$r = hook('nobody-here', 'airbnb', \%created);
is($r->{status}, 404, 'an unknown business: 404');

# create; the valid v1 after another one, as during a secret roll
{
    my $ts = int(time);
    my $body = $json->encode(\%created);
    my $sig = hmac_sha256_hex("$ts.$body", $SECRET);
    $r = $t->req('POST', '/api/channels/ann-stays/airbnb/webhook',
                 headers => { 'X-Channel-Signature' =>
                              "t=$ts,v1=" . ('0' x 64) . ",v1=$sig" },
                 body => $body);
}
is($r->{status}, 200, 'created: 200');
is(body_of($r)->{outcome}, 'created', 'outcome created');
my $hm1 = body_of($r)->{booking_id};
is(bookings_of($pa), 'HM1:confirmed:' . day(10) . ':' . day(13),
   'a confirmed airbnb booking');

# the business by id works too
$r = hook($biz, 'airbnb', { %created, id => 'evt_1' });
is($r->{status}, 200, 'by business id: 200');
ok(body_of($r)->{duplicate}, 'replayed event: duplicate');

# replay: no double effect
$r = hook('ann-stays', 'airbnb', \%created);
is($r->{status}, 200, 'same event again: 200');
is(body_of($r)->{duplicate}, JSON::PP::true, 'reported as a duplicate');
is(body_of($r)->{booking_id}, $hm1, 'with its booking');
is(bookings_of($pa), 'HM1:confirmed:' . day(10) . ':' . day(13),
   'still one booking');

# the same reservation under another event id: idempotent by external id
$r = hook('ann-stays', 'airbnb', { %created, id => 'evt_1b' });
is(body_of($r)->{outcome}, 'changed', 'created again: the same booking');
is(sql("SELECT count(*) FROM rentals.bookings WHERE property_id = $pa"), 1,
   'one row per channel reservation');

# change
$r = hook('ann-stays', 'airbnb',
          { id => 'evt_2', type => 'booking.changed',
            booking => { id => 'HM1', property_id => $pa + 0,
                         check_in => day(11), check_out => day(15) } });
is(body_of($r)->{outcome}, 'changed', 'changed');
is(bookings_of($pa), 'HM1:confirmed:' . day(11) . ':' . day(15),
   'new dates');

# bad input names the field, records nothing
is(field_of(hook('ann-stays', 'airbnb',
                 { id => 'evt_bad', type => 'booking.changed',
                   booking => { id => 'HM1', property_id => $pa + 0,
                                check_in => day(11),
                                check_out => day(11) } })),
   '400 booking.check_out', 'reversed dates: 400 booking.check_out');
is(field_of(hook('ann-stays', 'airbnb',
                 { id => 'evt_bad2', type => 'booking.paid',
                   booking => { id => 'HM1' } })),
   '400 type', 'unknown type: 400');
is(hook('ann-stays', 'airbnb',
        { %created, id => 'evt_bad3',
          booking => { %{$created{booking}}, property_id => $pb + 0 } })
       ->{status}, 404, "another business's property: 404");
is(sql(q{SELECT count(*) FROM rentals.channel_events
         WHERE event_id LIKE 'evt_bad%'}), 0, 'none recorded');

# conflict: dates taken by a direct booking
$r = post("/api/owner/properties/$pa/bookings",
          { check_in => day(20), check_out => day(25), kind => 'booking',
            guest_name => 'Direct Dora' }, cookie => $ann);
is($r->{status}, 201, 'a manual booking for days 20-25');
my $dora = body_of($r)->{id};

$r = hook('ann-stays', 'airbnb',
          { id => 'evt_3', type => 'booking.created',
            booking => { id => 'HM2', property_id => $pa + 0,
                         check_in => day(22), check_out => day(24),
                         guest_name => 'Clash Carl' } });
is($r->{status}, 200, 'conflicting stay: 200 (accepted, not retried)');
is(body_of($r)->{outcome}, 'conflict', 'outcome conflict');
my $err_id = body_of($r)->{booking_error_id};
ok($err_id, 'a booking error');
is(sql("SELECT count(*) FROM rentals.bookings WHERE external_id = 'HM2'"),
   0, 'no overlapping booking');
my $mail = wait_for(20, sub {
    (grep { ($_->{subject} // '') =~ /Booking conflict/ }
          mails_to('ann@example.org'))[0] });
ok($mail, 'the owner is mailed about the conflict');
like($mail->{text} // '', qr/HM2.*already taken by booking $dora/s,
     'naming the reservation and the booking in the way');

$r = hook('ann-stays', 'airbnb',
          { id => 'evt_3', type => 'booking.created',
            booking => { id => 'HM2', property_id => $pa + 0,
                         check_in => day(22), check_out => day(24) } });
ok(body_of($r)->{duplicate}, 'the conflicting event replayed: duplicate');
is(sql(q{SELECT count(*) FROM rentals.booking_errors}), 1,
   'still one booking error');

$r = get('/api/owner/booking-errors', cookie => $ann);
is($r->{status}, 200, 'booking errors listed');
my @errs = @{body_of($r)->{errors}};
is(scalar(@errs), 1, 'one open');
is("$errs[0]{external_id} $errs[0]{conflict_booking_id} $errs[0]{check_in}",
   "HM2 $dora " . day(22), 'with its details');

is(get('/api/owner/booking-errors?status=later', cookie => $ann)->{status},
   400, 'bad status: 400');

# cancel
$r = hook('ann-stays', 'airbnb',
          { id => 'evt_4', type => 'booking.cancelled',
            booking => { id => 'HM1', property_id => $pa + 0 } });
is(body_of($r)->{outcome}, 'cancelled', 'cancelled');
is(bookings_of($pa), 'HM1:cancelled:' . day(11) . ':' . day(15),
   'the booking is cancelled');
$r = hook('ann-stays', 'airbnb',
          { id => 'evt_5', type => 'booking.cancelled',
            booking => { id => 'HM1', property_id => $pa + 0 } });
is(body_of($r)->{outcome}, 'ignored', 'cancelled twice: ignored');

# ------------------------------------------------------------------ outbound

ok(wait_for(20, sub { scalar pushes(qr{^/airbnb/properties/$pa/}) }),
   'a push reached the channel');
my ($push) = reverse pushes(qr{^/airbnb/properties/$pa/availability$});
my %h = map { lc($_->[0]) => $_->[1] } @{$push->{headers}};
is($h{'x-api-key'}, $API_KEY, 'with the API key, opened by the runner');
my $pj = decode_json($push->{body});
is($pj->{property}{id}, $pa, 'the property');

# the last push has the availability after the cancel
ok(wait_for(20, sub {
    sql(q{SELECT count(*) FROM jobs.jobs WHERE state IN ('pending', 'running')
          AND (key LIKE 'channel-push:%' OR kind = 'call')}) == 0 }),
   'pushes done');
($push) = reverse pushes(qr{^/airbnb/properties/$pa/availability$});
$pj = decode_json($push->{body});
is(join(' ', map { "$_->{check_in}/$_->{check_out}" }
             @{$pj->{unavailable}}),
   day(20) . '/' . day(25), 'availability: the stay still taken');

# ten changes (ten transactions) within the push delay: one push
sql(q{UPDATE rentals.channel_kinds SET push_delay = '3 s'});
my $before = scalar pushes(qr{^/airbnb/properties/$pa/});
sql(join(";\n", map { "UPDATE rentals.properties SET name = 'Sea View $_' "
                       . "WHERE id = $pa" } 1 .. 10) . ';');
sql(q{UPDATE rentals.channel_kinds SET push_delay = '0.3 s'});
ok(wait_for(20, sub { pushes(qr{^/airbnb/properties/$pa/}) > $before }),
   'property details pushed');
sleep 1.5;
ok(wait_for(20, sub {
    sql(q{SELECT count(*) FROM jobs.jobs WHERE state IN ('pending', 'running')
          AND (key LIKE 'channel-push:%' OR kind = 'call')}) == 0 }),
   'done');
is(scalar(pushes(qr{^/airbnb/properties/$pa/})) - $before, 1,
   'ten changes within the delay: one push');
($push) = reverse pushes(qr{^/airbnb/properties/$pa/availability$});
is(decode_json($push->{body})->{property}{name}, 'Sea View 10',
   'carrying the last name');

# no channel, no push: Bob's business has none
is(sql("SELECT count(*) FROM jobs.jobs WHERE key = 'channel-push:$pb'"), 0,
   'no push for a business without channels');

# ------------------------------------------------------------------ dead

$sink->status(503);
$before = scalar pushes(qr{^/airbnb/properties/$pa/});
post("/api/owner/properties/$pa/bookings",
     { check_in => day(40), check_out => day(42), kind => 'block' },
     cookie => $ann);

my $dead;
ok(wait_for(30, sub {
    $dead = body_of(get('/api/owner/channels/dead', cookie => $ann))->{dead};
    $dead && @$dead }), 'the failed push is a dead letter');
is($dead->[0]{channel}, 'airbnb', 'of airbnb');
is($dead->[0]{property_id}, $pa, 'for the property');
is($dead->[0]{attempts}, 2, 'after its attempts');
like($dead->[0]{last_error} // '', qr/503/, 'with the reason');
ok(scalar(pushes(qr{^/airbnb/properties/$pa/})) - $before >= 2,
   'the receiver was tried again');

is(post("/api/owner/channels/dead/$dead->[0]{id}/retry", undef,
        cookie => $bob)->{status}, 404, "Bob cannot retry Ann's push");

$sink->status(200);
$before = scalar pushes(qr{^/airbnb/properties/$pa/});
$r = post("/api/owner/channels/dead/$dead->[0]{id}/retry", undef,
          cookie => $ann);
is($r->{status}, 200, 'retried');
ok(wait_for(20, sub {
    my @p = pushes(qr{^/airbnb/properties/$pa/});
    grep { $_->{status} == 200 } @p[$before .. $#p] }),
   'the retry reached the channel');
ok(wait_for(20, sub {
    !@{body_of(get('/api/owner/channels/dead', cookie => $ann))->{dead}} }),
   'the dead list is empty again');
($push) = reverse pushes(qr{^/airbnb/properties/$pa/availability$});
like($push->{body}, qr/\Q@{[day(40)]}\E/, 'with the block');
%h = map { lc($_->[0]) => $_->[1] } @{$push->{headers}};
is($h{'x-api-key'}, $API_KEY, 'and the key');
is(post("/api/owner/channels/dead/$dead->[0]{id}/retry", undef,
        cookie => $ann)->{status}, 404, 'not dead any more: 404');

# ------------------------------------------------------------------ tenants

$r = get('/api/owner/channels', cookie => $bob);
is(join(',', map { ($_->{connected} ? 1 : 0) } @{body_of($r)->{channels}}),
   '0,0', "Bob sees none of Ann's channels");
is(scalar @{body_of(get('/api/owner/booking-errors', cookie => $bob))
              ->{errors}}, 0, "nor her booking errors");
is(post("/api/owner/booking-errors/$err_id/resolve", { resolution => 'x' },
        cookie => $bob)->{status}, 404, 'nor resolves them: 404');
is(req('DELETE', '/api/owner/channels/airbnb', undef,
       cookie => $bob)->{status}, 404, 'nor deletes her channel: 404');
is(scalar @{body_of(get('/api/owner/channels/dead', cookie => $bob))
              ->{dead}}, 0, 'nor sees her dead letters');
is(sql(q{SELECT count(*) FROM rentals.channels}), 1, "Ann's channel stays");

# Bob connects his own: Ann's key is not his
$r = req('PUT', '/api/owner/channels/airbnb',
         { api_key => 'bob_key_0000', webhook_secret => 'bob_secret_1111' },
         cookie => $bob);
is($r->{status}, 201, 'Bob connects airbnb');
is(hook('bob-lets', 'airbnb',
        { %created, id => 'evt_bob',
          booking => { %{$created{booking}}, property_id => $pb + 0 } })
       ->{status}, 401, "Ann's secret does not open Bob's webhook");
is(hook('bob-lets', 'airbnb',
        { %created, id => 'evt_bob',
          booking => { %{$created{booking}}, property_id => $pb + 0 } },
        secret => 'bob_secret_1111')->{status}, 200, 'his own does');

# resolve
$r = post("/api/owner/booking-errors/$err_id/resolve",
          { resolution => 'Refunded on Airbnb' }, cookie => $ann);
is($r->{status}, 200, 'resolved');
ok(body_of($r)->{resolved_at}, 'resolved_at set');
is(scalar @{body_of(get('/api/owner/booking-errors', cookie => $ann))
              ->{errors}}, 0, 'no open errors left');
is(scalar @{body_of(get('/api/owner/booking-errors?status=all',
                        cookie => $ann))->{errors}}, 1, 'one in all');

# disconnect
$r = req('DELETE', '/api/owner/channels/airbnb', undef, cookie => $ann);
is($r->{status}, 200, 'disconnected');
is(hook('ann-stays', 'airbnb', { %created, id => 'evt_9' })->{status}, 404,
   'its webhook is gone');

$t->stop;
done_testing();
