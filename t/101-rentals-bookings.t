#!/usr/bin/perl

# Holiday rentals, part 2 (issue 7; sql/017_rentals_bookings.sql,
# conf/api/rentals.conf): the public site's property page and quote, and
# bookings with the real pieces (nginx and its jobs runner, PostgreSQL, an
# SMTP sink, the Stripe-format server of t/lib/stripe_server.py):
#
#   quote: price, and every validation error naming its field
#   100 concurrent overlapping bookings of one property: exactly one held
#   back to back: the check-out day is the next guest's check-in
#   the paid flow: held, magic link, session, Checkout Session created by a
#     call job, paid on the hosted page, the signed webhook confirms it,
#     confirmation mail; my bookings
#   a hold running out (2 s hold through $platform_hold_seconds): expired,
#     the dates free again
#   owners: bookings by property, by business and by dates; manual blocks;
#     cancelling frees the dates

use strict;
use warnings;

use Test::More;
use Test::Platform qw(wait_for field_of confirm_token);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $KEY = 'sk_test_101rentals0123456789';
my $WHSEC = 'whsec_101rentalsSecret0123456789';

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $port = $t->port;
my $origin = "http://127.0.0.1:$port";

sub write_file {
    my ($name, $text) = @_;
    open(my $fh, '>:raw', "$dir/$name") or die "$name: $!\n";
    print $fh $text;
    close $fh;
    chmod 0600, "$dir/$name";
}

$t->key_file;
write_file('stripe.key', "$KEY\n");
write_file('stripe-webhook.secret', "$WHSEC\n");

my $smtp = $t->smtp_sink;
my $stripe = $t->stripe_server(key => $KEY, webhook_secret => $WHSEC,
                               webhook_url => "$origin/api/stripe/webhook");
my ($SP, $STP) = ($smtp->port, $stripe->port);

# The second server holds dates for 2 seconds only.
$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 4; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_jobs_batch 50;
    platform_jobs_timeout 5s;
    platform_jobs_lease 10s;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service stripe http://127.0.0.1:$STP bearer=$dir/stripe.key;

    server {
        listen 127.0.0.1:%%PORT%%;
        @{[ $t->api_conf(qw(auth rentals)) ]}

        # the pages, as conf/nginx.conf serves them
        root %%ROOT%%/html;
        location ~ "^/b/[a-z0-9-]{3,63}/(?:index\\.html)?\$" {
            try_files /b/index.html =404;
        }
        location ~ "^/b/[a-z0-9-]{3,63}/(property|booking)\\.html\$" {
            try_files /b/\$1.html =404;
        }

        location = /api/stripe/webhook {
            platform_webhook_signature stripe $dir/stripe-webhook.secret
                                       tolerance=300s;
            platform_query POST api.stripe_webhook(\$platform_body::jsonb,
                \$platform_signature_time::bigint);
        }
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        @{[ $t->api_conf(qw(auth rentals), { hold_seconds => 2 }) ]}
    }
EOF

$t->psql('UPDATE jobs.settings SET backoff_base_seconds = 0.1');
$t->run;

my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers

sub body_of { $t->json($_[0]) || {} }

sub wait_mail { $smtp->wait_mail(@_) }
sub token_of  { confirm_token(@_) }
sub concurrent_posts { $t->concurrent_posts(@_) }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = (Origin => $origin);
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    return $t->req($method, $path, headers => \%h, port => $o{port},
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }
sub sql  { $t->psql(@_) }

# A date N days from today (UTC; the property is in UTC).
sub day { strftime('%Y-%m-%d', gmtime(time + $_[0] * 86400)) }

# ------------------------------------------------------------------ set-up

my $ann = $t->sign_in('ann@example.org');
my $r = post('/api/rentals/signup', { email => 'ann@example.org',
                                      business_name => 'Ann Stays',
                                      slug => 'ann-stays' }, cookie => $ann);
is($r->{status}, 201, 'ann runs ann-stays');
req('PATCH', '/api/owner/business', { stripe_account => 'acct_1AnnStays' },
    cookie => $ann);

$r = post('/api/owner/properties',
          { name => 'Sea View', capacity => 4, price_minor => 10000,
            cleaning_fee_minor => 5000, currency => 'EUR', min_nights => 2,
            address => '1 Beach Road' }, cookie => $ann);
my $pa = body_of($r)->{id} or die "property: $r->{content}\n";
$r = post('/api/owner/properties',
          { name => 'Tiny Hut', capacity => 1, price_minor => 3000,
            currency => 'EUR' }, cookie => $ann);
my $hut = body_of($r)->{id};

my $bob = $t->sign_in('bob@example.org');
post('/api/rentals/signup', { email => 'bob@example.org',
                              business_name => 'Bob', slug => 'bob-lets' },
     cookie => $bob);
$r = post('/api/owner/properties',
          { name => 'Bob Flat', capacity => 2, price_minor => 9000,
            currency => 'EUR' }, cookie => $bob);
my $pb = body_of($r)->{id};

my $base = "/api/b/ann-stays/properties/$pa";

# ------------------------------------------------------------------ pages

for my $p (['/b/ann-stays/', 'b-site.js'], ['/b/ann-stays/index.html', 'b-site.js'],
           ['/b/ann-stays/property.html?id=1', 'b-property.js'],
           ['/b/ann-stays/booking.html?id=1', 'b-booking.js']) {
    my $r = get($p->[0]);
    like("$r->{status} $r->{content}", qr{^200 .*/js/\Q$p->[1]\E}s,
         "$p->[0]: the site's page");
}
is(get('/b/ann-stays/other.html')->{status}, 404, 'no other page there');

# ------------------------------------------------------------------ quote

$r = get("$base/quote?check_in=" . day(10) . '&check_out=' . day(13)
         . '&guests=2');
is($r->{status}, 200, 'a quote');
is_deeply({ map { $_ => body_of($r)->{$_} }
            qw(nights nights_minor cleaning_fee_minor total_minor currency available) },
          { nights => 3, nights_minor => 30000, cleaning_fee_minor => 5000,
            total_minor => 35000, currency => 'EUR',
            available => JSON::PP::true() },
          '3 nights x 100.00 + 50.00 cleaning = 350.00 EUR, available');

for my $case (
    [day(13), day(10), 2, '400 check_out', 'reversed dates'],
    [day(-2), day(3), 2, '400 check_in', 'check-in in the past'],
    [day(10), day(11), 2, '400 check_out', 'shorter than the minimum stay'],
    [day(10), day(13), 5, '400 guests', 'over capacity'],
    [day(10), day(13), 0, '400 guests', 'no guests'],
    [day(10), day(13), 'x', '400 guests', 'guests not a number'],
    ['tomorrow', day(13), 2, '400 check_in', 'check_in not a date'],
    [day(10), '2031-02-30', 2, '400 check_out', 'no such day'],
    ['', day(13), 2, '400 check_in', 'check_in missing'],
) {
    my ($in, $out, $g, $want, $what) = @$case;
    is(field_of(get("$base/quote?check_in=$in&check_out=$out&guests=$g")),
       $want, "quote, $what: $want");
}
is(get("/api/b/ann-stays/properties/999999/quote?check_in=" . day(10)
       . '&check_out=' . day(13))->{status}, 404, 'an unknown property: 404');
is(get("/api/b/ann-stays/properties/$pb/quote?check_in=" . day(10)
       . '&check_out=' . day(13))->{status}, 404,
   'bob\'s property under ann\'s site: 404');

# Booking: the same checks on the body, and the guest's details.
my %stay = (email => 'gus@example.org', name => 'Gus', check_in => day(10),
            check_out => day(13), guests => 2);
for my $case ([{ %stay, check_out => day(9) }, '400 check_out'],
              [{ %stay, check_in => day(-1) }, '400 check_in'],
              [{ %stay, check_out => day(11) }, '400 check_out'],
              [{ %stay, guests => 9 }, '400 guests'],
              [{ %stay, guests => '2' }, '400 guests'],
              [{ %stay, email => 'gus' }, '400 email'],
              [{ %stay, name => '' }, '400 name'],
              [{ %stay, check_in => 20310101 }, '400 check_in'],
              [{ %stay, pets => 1 }, '400 pets']) {
    my ($b, $want) = @$case;
    my ($k) = grep { !exists $stay{$_} || $b->{$_} ne $stay{$_} } sort keys %$b;
    $k //= 'guests (a string)';
    is(field_of(post("$base/bookings", $b)), $want, "booking, bad $k: $want");
}
is(post('/api/b/ann-stays/properties/999999/bookings', \%stay)->{status}, 404,
   'booking an unknown property: 404');
is(sql('SELECT count(*) FROM rentals.bookings'), 0, 'nothing was written');

# ------------------------------------------------------------------ 100 at once

{
    my @bodies = map {
        $json->encode({ email => "racer$_\@example.org", name => "Racer $_",
                        check_in => day(30 + $_ % 3), check_out => day(34),
                        guests => 1 })
    } 1 .. 100;
    my $t0 = time;
    my @res = concurrent_posts("$base/bookings", @bodies);
    my %by;
    $by{$_->{status}}++ for @res;
    is($by{202}, 1, '100 overlapping bookings at once: exactly one is held')
        or diag(explain(\%by));
    is($by{409}, 99, 'the other 99: 409');
    my ($conflict) = grep { $_->{status} == 409 } @res;
    is(field_of({ %$conflict }), '409 check_in', 'naming check_in');
    is(sql("SELECT count(*) FROM rentals.bookings WHERE property_id = $pa "
           . "AND status IN ('held', 'confirmed')"), 1,
       'one held booking in the database');
    note(sprintf('100 concurrent bookings: %.1f s', time - $t0));
}

# Back to back: from its check-out day on.
$r = post("$base/bookings", { email => 'next@example.org', name => 'Next',
                              check_in => day(34), check_out => day(36) });
is($r->{status}, 202, 'back to back: the check-out day is the next check-in');
$r = post("$base/bookings", { email => 'prev@example.org', name => 'Prev',
                              check_in => day(28), check_out => day(30) });
is($r->{status}, 202, 'and the check-in day is the previous check-out');
is(field_of(post("$base/bookings", { email => 'x@example.org', name => 'X',
                                     check_in => day(35), check_out => day(37) })),
   '409 check_in', 'one night into a stay: 409');

$r = get("$base?from=" . day(25) . '&to=' . day(40));
my @booked = map { [$_->{check_in}, $_->{check_out}] }
             @{body_of($r)->{availability}{booked}};
is_deeply([@booked[0, 2]], [[day(28), day(30)], [day(34), day(36)]],
          'the property page shows the stays taken, in order');
is($booked[1][1], day(34), 'the racer\'s in the middle');
is(scalar @{body_of($r)->{availability}{booked}}, 3, 'three stays');
ok(!grep({ exists $_->{guest_email} } @{body_of($r)->{availability}{booked}}),
   'without who');
is(field_of(get("$base?from=" . day(40) . '&to=' . day(25))), '400 to',
   'a reversed range: 400 to');
is(field_of(get("$base?from=2031-13-01")), '400 from', 'a bad month: 400');

# ------------------------------------------------------------------ paid flow

$r = post("$base/bookings", { email => 'eve@example.org', name => 'Eve',
                              check_in => day(50), check_out => day(53),
                              guests => 2 });
is($r->{status}, 202, 'eve books: 202, her dates held');
my $eve_id = body_of($r)->{booking}{id};
is(body_of($r)->{booking}{status}, 'held', 'held');
is(body_of($r)->{booking}{amount_minor}, 35000, 'at the quoted total');

my $m = wait_mail('eve@example.org', qr/^Confirm your booking at Sea View/);
ok($m, 'the magic link arrives');
like($m->{text} // '', qr/350\.00 EUR/, 'with the total');
$r = post('/api/auth/confirm', { token => token_of($m->{text}) });
is($r->{status}, 200, 'eve confirms her address');
my $eve = $t->session_cookie($r);
is(body_of($r)->{return_path}, "/b/ann-stays/booking.html?id=$eve_id",
   'back to the booking page');
is(body_of($r)->{bookings}[0]{id}, $eve_id, 'the confirmation names the booking');

$r = wait_for(20, sub {
    my $r = get("/api/bookings/$eve_id", cookie => $eve);
    body_of($r)->{checkout_url} ? $r : undef;
});
ok($r, 'the booking shows the checkout URL once Stripe answered')
    or diag(sql("SELECT kind, state, last_error FROM jobs.jobs WHERE kind = 'call'"));
my $checkout_url = body_of($r)->{checkout_url} // '';
like($checkout_url, qr{/pay/cs_test_[0-9a-f]+$}, 'on the Stripe(-format) server');

my ($create) = grep {
    $_->{path} eq '/v1/checkout/sessions'
    && ($_->{form}{'metadata[booking_id]'} // '') eq $eve_id
} $stripe->requests;
ok($create, 'POST /v1/checkout/sessions by a call job');
my $f = $create->{form} || {};
is($f->{'metadata[kind]'}, 'booking', 'metadata kind=booking');
is($f->{'line_items[0][price_data][unit_amount]'}, 35000, 'amount');
is($f->{'payment_intent_data[transfer_data][destination]'}, 'acct_1AnnStays',
   'to the business\'s account');
is($f->{customer_email}, 'eve@example.org', 'customer email');

is(get("/api/bookings/$eve_id", cookie => $ann)->{status}, 404,
   'someone else\'s booking: 404');

$r = HTTP::Tiny->new(max_redirect => 0)->post($checkout_url);
is($r->{status}, 303, 'eve pays on the hosted page');
like($r->{headers}{location} // '',
     qr{^\Q$origin\E/b/ann-stays/booking\.html\?id=$eve_id&session_id=cs_test_},
     'back to the booking page');
my ($paid) = grep { $_->{type} eq 'checkout.session.completed' } $stripe->webhooks;
is(($t->json({ content => $paid->{response} // '' }) || {})->{outcome},
   'confirmed', 'the signed webhook confirmed the booking');

$r = get("/api/bookings/$eve_id", cookie => $eve);
is(body_of($r)->{status}, 'confirmed', 'the booking says confirmed');
$m = wait_mail('eve@example.org', qr/^Booking confirmed: Sea View/);
ok($m, 'the confirmation mail arrives');
like($m->{text} // '', qr/Paid:\s+350\.00 EUR/, 'with the amount paid');

$r = get('/api/me/bookings', cookie => $eve);
is_deeply([map { $_->{id} } @{body_of($r)->{upcoming}}], [$eve_id],
          'my bookings: hers');
is(get('/api/me/bookings')->{status}, 401, 'signed out: 401');

# A signed-in guest: no link, the payment starts at once.
$r = post("$base/bookings", { email => 'eve@example.org', name => 'Eve',
                              check_in => day(60), check_out => day(62) },
          cookie => $eve);
is($r->{status}, 201, 'signed in as the address: 201, payment at once');

# ------------------------------------------------------------------ hold expiry

$r = req('POST', "$base/bookings", { email => 'gina@example.org', name => 'Gina',
                                     check_in => day(70), check_out => day(72) },
         port => $t->port2);
is($r->{status}, 202, 'gina books through the server holding 2 s');
my $gina = body_of($r)->{booking}{id};
ok(wait_for(30, sub {
       sql("SELECT status FROM rentals.bookings WHERE id = $gina") eq 'expired'
   }), 'the hold runs out: expired (keyed sql job)');
is(sql("SELECT state FROM jobs.jobs WHERE key = 'booking-hold:$gina'"), 'done',
   'by its job');
$r = post("$base/bookings", { email => 'hal@example.org', name => 'Hal',
                              check_in => day(70), check_out => day(72) });
is($r->{status}, 202, 'the dates are free again');

# ------------------------------------------------------------------ owners

$r = post("/api/owner/properties/$hut/bookings",
          { check_in => day(5), check_out => day(8), kind => 'block',
            note => 'painting' }, cookie => $ann);
is($r->{status}, 201, 'ann blocks the hut');
$r = post("/api/owner/properties/$hut/bookings",
          { check_in => day(7), check_out => day(9), source => 'airbnb',
            external_id => 'HM123', guest_name => 'Air Guest' },
          cookie => $ann);
is(field_of($r), '409 check_in', 'an overlapping channel booking: 409');
$r = post("/api/owner/properties/$hut/bookings",
          { check_in => day(8), check_out => day(9), source => 'airbnb',
            external_id => 'HM123', guest_name => 'Air Guest' },
          cookie => $ann);
is($r->{status}, 201, 'back to back with the block: 201');
is(body_of($r)->{source}, 'airbnb', 'source kept');
my $air = body_of($r)->{id};
is(field_of(post("/api/owner/properties/$hut/bookings",
                 { check_in => day(3), check_out => day(2) }, cookie => $ann)),
   '400 check_out', 'reversed: 400');
is(field_of(post("/api/owner/properties/$hut/bookings",
                 { check_in => day(90), check_out => day(91), source => 'fax' },
                 cookie => $ann)), '400 source', 'unknown source: 400');

$r = get("/api/owner/bookings?property=$hut", cookie => $ann);
is_deeply([map { $_->{kind} } @{body_of($r)->{bookings}}], ['block', 'booking'],
          'by property, by check-in');
$r = get('/api/owner/bookings', cookie => $ann);
my @all = @{body_of($r)->{bookings}};
ok(@all >= 6, 'by business: both properties (' . scalar(@all) . ')');
ok(!grep({ $_->{status} !~ /^(held|confirmed)$/ } @all),
   'held and confirmed by default');
$r = get('/api/owner/bookings?from=' . day(49) . '&to=' . day(51), cookie => $ann);
is_deeply([map { $_->{id} } @{body_of($r)->{bookings}}], [$eve_id],
          'by dates: the stays meeting the range');
is(body_of($r)->{bookings}[0]{guest_email}, 'eve@example.org',
   'with the guest');
is(field_of(get('/api/owner/bookings?from=xx', cookie => $ann)), '400 from',
   'bad from: 400');
is(field_of(get('/api/owner/bookings?status=lost', cookie => $ann)),
   '400 status', 'bad status: 400');
is_deeply(body_of(get('/api/owner/bookings', cookie => $bob))->{bookings}, [],
          'bob sees none of them');

$r = post("/api/owner/bookings/$air/cancel", undef, cookie => $ann);
is(body_of($r)->{status}, 'cancelled', 'ann cancels the channel booking');
$r = post("/api/owner/properties/$hut/bookings",
          { check_in => day(8), check_out => day(9) }, cookie => $ann);
is($r->{status}, 201, 'its dates are free again');

$r = post("/api/owner/bookings/$eve_id/cancel", undef, cookie => $ann);
is(body_of($r)->{status}, 'cancelled', 'ann cancels eve\'s paid booking');
ok(wait_for(20, sub {
       sql("SELECT refund_id IS NOT NULL FROM rentals.bookings WHERE id = $eve_id")
           eq 't' }), 'eve\'s payment is refunded');
ok(wait_mail('eve@example.org', qr/^Booking cancelled: Sea View/),
   'and she is told');

done_testing;
