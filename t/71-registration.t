#!/usr/bin/perl

# Registration, tickets and payment (issue 4, sql/008_registration.sql,
# conf/api/registration.conf) over HTTP, with the real pieces: nginx and
# its jobs runner, PostgreSQL, an SMTP sink for the mail and a server
# speaking Stripe's wire format (t/lib/stripe_server.py) for Checkout,
# refunds and signed webhooks.
#
#   free ticket end to end: register, the link by mail, confirm, ticket,
#     my tickets, the calendar file, the confirmation mail
#   200 concurrent confirmations for 50 places: 50 tickets, 150 "sold out"
#   paid ticket end to end: hold, Checkout Session created by a call job
#     (destination charge to the organiser), paid on the hosted page, the
#     signed webhook issues the ticket; replayed, redelivered, tampered,
#     stale and unsigned webhooks
#   a hold released: the session expired, Stripe refusing the create, the
#     hold running out (a short hold through $platform_hold_seconds)
#   the organiser cancels the event: tickets cancelled, mails, refunds

use strict;
use warnings;

use Test::More;
use Test::Platform qw(wait_for field_of confirm_token);
use Digest::SHA qw(hmac_sha256_hex);
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(time sleep);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $KEY = 'sk_test_71registration0123456789';
my $WHSEC = 'whsec_71registrationSecret0123456789';

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

open(my $in, '<:raw', '/dev/urandom') or die "urandom: $!\n";
read($in, my $skey, 32) == 32 or die "urandom: short read\n";
close $in;
write_file('session.key', $skey);
write_file('stripe.key', "$KEY\n");
write_file('stripe-webhook.secret', "$WHSEC\n");

my $smtp = $t->smtp_sink;
my $stripe = $t->stripe_server(key => $KEY, webhook_secret => $WHSEC,
                               webhook_url => "$origin/api/stripe/webhook");
my ($SP, $STP) = ($smtp->port, $stripe->port);

# The webhook location as conf/nginx.conf has it (there beside the Stripe
# service, since it names the secret's file).
my $webhook = <<"EOF";
        location = /api/stripe/webhook {
            platform_webhook_signature stripe $dir/stripe-webhook.secret
                                       tolerance=300s;
            platform_query POST api.stripe_webhook(\$platform_body::jsonb,
                \$platform_signature_time::bigint);
        }
EOF

# A second server holds paid places for 2 seconds only.
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
        @{[ $t->api_conf(qw(auth events registration)) ]}
$webhook
    }

    server {
        listen 127.0.0.1:%%PORT2%%;
        @{[ $t->api_conf(qw(auth events registration),
                         { hold_seconds => 2 }) ]}
    }
EOF

$t->psql('UPDATE jobs.settings SET backoff_base_seconds = 0.1');
$t->run;

my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers

sub body_of { $t->json($_[0]) || {} }

sub wait_mail { $smtp->wait_mail(@_) }
sub mails_to  { $smtp->mails_to(@_) }
sub token_of  { confirm_token(@_) }
sub concurrent_posts { $t->concurrent_posts(@_) }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = %{$o{headers} || {}};
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin;
    }
    return $t->req($method, $path, headers => \%h, port => $o{port},
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }

sub register {
    my ($ev, $tt, $email, %o) = @_;
    return post("/api/events/$ev/registrations",
                { ticket_type_id => $tt, email => $email,
                  name => $o{name} // 'Participant',
                  accept_terms => JSON::PP::true(),
                  gdpr_consent => JSON::PP::true() }, %o);
}

# Registers EMAIL and confirms through the link of its mail job (the mail
# itself is checked once, for the free flow).
sub register_confirmed {
    my ($ev, $tt, $email, %o) = @_;
    my $r = register($ev, $tt, $email, %o);
    die "register $email: $r->{status} $r->{content}\n" if $r->{status} != 202;
    my $tok = token_of($t->mail_link($email)) or die "no link for $email\n";
    $r = post('/api/auth/confirm', { token => $tok });
    die "confirm $email: $r->{status} $r->{content}\n" if $r->{status} != 200;
    return (body_of($r), scalar $t->session_cookie($r));
}

sub sql { $t->psql(@_) }

sub stripe_api {
    my ($method, $path) = @_;
    return HTTP::Tiny->new(timeout => 10)->request($method, $stripe->url . $path,
        { headers => { Authorization => "Bearer $KEY" } });
}

sub sign {
    my ($body, $ts) = @_;
    return "t=$ts,v1=" . hmac_sha256_hex("$ts.$body", $WHSEC);
}

sub send_webhook {
    my ($body, $sig) = @_;
    return $t->req('POST', '/api/stripe/webhook', body => $body,
                   headers => { 'Content-Type' => 'application/json; charset=utf-8',
                                defined $sig ? ('Stripe-Signature' => $sig) : () });
}

sub sold { sql("SELECT sold FROM app.ticket_types WHERE id = $_[0]") }

# ------------------------------------------------------------------ set-up

my $ann = $t->sign_in('ann@example.org');
my $r = post('/api/orgs', { name => 'Rust Events' }, cookie => $ann);
my $org = body_of($r)->{id};
$ann = $t->session_cookie($r);
ok($org && $ann, 'ann runs an organisation');

my $bob = $t->sign_in('bob@example.org');
$r = post('/api/orgs', { name => 'Other Org' }, cookie => $bob);
my $org_b = body_of($r)->{id};
$bob = $t->session_cookie($r);

$r = req('PUT', "/api/orgs/$org/stripe", { account => 'not an account' },
         cookie => $ann);
is(field_of($r), '400 account', 'Stripe account: the id is checked');
$r = req('PUT', "/api/orgs/$org/stripe", { account => 'acct_1RustEvents' },
         cookie => $ann);
is($r->{status}, 200, 'the organiser sets the connected Stripe account');
is(req('PUT', "/api/orgs/$org/stripe", { account => 'acct_1Evil' },
       cookie => $bob)->{status}, 403, 'not on another organisation');

sub event {
    my (%o) = @_;
    my $r = post("/api/orgs/$org/events",
                 { title => $o{title}, business_type => 'conference',
                   starts_at => '2031-03-10T09:00:00Z',
                   ends_at => '2031-03-10T17:30:00Z',
                   time_zone => 'Europe/Paris',
                   description => "Talks, food; and more.\nSee you there." },
                 cookie => $ann);
    my $ev = body_of($r)->{id} or die "event: $r->{content}\n";
    my %tt;
    for my $type (@{$o{types}}) {
        my ($name, $q, $price) = @$type;
        $r = post("/api/orgs/$org/events/$ev/ticket-types",
                  { name => $name, quantity => $q,
                    $price ? (price_minor => $price, currency => 'EUR') : () },
                  cookie => $ann);
        $tt{$name} = body_of($r)->{id} or die "ticket type: $r->{content}\n";
    }
    $r = post("/api/orgs/$org/events/$ev/publish", undef, cookie => $ann);
    die "publish: $r->{content}\n" if $r->{status} != 200;
    return ($ev, \%tt);
}

my ($ev, $tt) = event(title => 'RustConf; Paris, 2031',
                      types => [['Free', 10], ['Supporter', 5, 2500]]);
my ($big, $btt) = event(title => 'Big Free Meetup', types => [['Seat', 50]]);

# ------------------------------------------------------------------ hold expiry (started early)

# Through the second server: its places are held for 2 seconds.  The
# outcome is checked further down, meanwhile the rest runs.
$r = register($ev, $tt->{Supporter}, 'gina@example.org', port => $t->port2);
is($r->{status}, 202, 'gina registers through the server with a 2 s hold');
my $gina_reg = body_of($r)->{registration}{id};
$r = post('/api/auth/confirm', { token => token_of($t->mail_link('gina@example.org')) });
is(body_of($r)->{registrations}[0]{status}, 'held', 'her place is held');

# ------------------------------------------------------------------ bad input

$r = register($ev, $tt->{Free}, 'nope');
is(field_of($r), '400 email', 'a malformed email: 400 naming email');
$r = post("/api/events/$ev/registrations",
          { ticket_type_id => $tt->{Free}, email => 'x@example.org',
            name => 'n' x 201, accept_terms => JSON::PP::true(),
            gdpr_consent => JSON::PP::true() });
is(field_of($r), '400 name', 'an over-long name: 400 naming name');
$r = post("/api/events/$ev/registrations",
          { ticket_type_id => $tt->{Free}, email => 'x@example.org',
            name => 'X', accept_terms => JSON::PP::true() });
is(field_of($r), '400 gdpr_consent', 'no GDPR consent: 400 naming it');
$r = register($ev, $btt->{Seat}, 'x@example.org');
is(field_of($r), '400 ticket_type_id', 'another event\'s ticket type: 400');
is(register(999999, $tt->{Free}, 'x@example.org')->{status}, 404,
   'an unknown event: 404');
is(get("/api/orgs/$org_b/events/$ev/registrations", cookie => $bob)->{status},
   404, 'another organisation\'s event through its own URL: 404');
is(get("/api/orgs/$org/events/$ev/registrations", cookie => $bob)->{status},
   403, 'and through the owner\'s URL: 403');

# ------------------------------------------------------------------ free ticket

$r = register($ev, $tt->{Free}, 'Carl@Example.org', name => 'Carl Ö');
is($r->{status}, 202, 'carl registers for a free ticket: 202');
is(body_of($r)->{status}, 'pending', 'pending');
my $carl_reg = body_of($r)->{registration}{id};

my $m = wait_mail('carl@example.org', qr/^Confirm your registration/);
ok($m, 'the link arrives by mail') or diag(sql("SELECT state, last_error FROM jobs.jobs"));
like($m->{subject} // '', qr/RustConf; Paris, 2031/, 'naming the event');
my $tok = token_of($m->{text});
ok($tok, 'with a link');

$r = post('/api/auth/confirm', { token => $tok });
is($r->{status}, 200, 'confirm: 200');
my $b = body_of($r);
is($b->{return_path}, "/registration.html?id=$carl_reg",
   'back to the registration page');
is($b->{registrations}[0]{status}, 'issued', 'the ticket is issued');
my $carl = $t->session_cookie($r);
ok($carl, 'and carl is signed in');

$r = get("/api/registrations/$carl_reg", cookie => $carl);
is($r->{status}, 200, 'GET the registration');
my $code = body_of($r)->{ticket}{code};
like($code // '', qr/^[0-9a-f]{32}$/, 'with the ticket code');
is(get("/api/registrations/$carl_reg", cookie => $bob)->{status}, 404,
   'someone else\'s registration: 404');

$r = get('/api/me/tickets', cookie => $carl);
is($r->{status}, 200, 'my tickets: 200');
$b = body_of($r);
is_deeply([map { [$_->{event}{title}, $_->{ticket_type}, $_->{code}] }
           @{$b->{upcoming}}],
          [['RustConf; Paris, 2031', 'Free', $code]], 'the upcoming event');
is(get('/api/me/tickets')->{status}, 401, 'my tickets needs a session');

$r = get("/api/tickets/$code/event.ics");
is($r->{status}, 200, 'the calendar file');
like($r->{headers}{'content-type'} // '', qr{^text/calendar; charset=utf-8$},
     'as text/calendar');
is($r->{headers}{'content-disposition'}, 'attachment; filename="event.ics"',
   'an attachment');
like($r->{content}, qr/\ABEGIN:VCALENDAR\r\n.*\r\nEND:VCALENDAR\r\n\z/s,
     'a VCALENDAR, CRLF');
like($r->{content}, qr/\r\nDTSTART:20310310T090000Z\r\nDTEND:20310310T173000Z\r\n/,
     'times in UTC');
like($r->{content}, qr/\r\nSUMMARY:RustConf\\; Paris\\, 2031\r\n/, 'escaped summary');
ok(!grep({ length > 75 } split /\r\n/, $r->{content}), 'lines of at most 75 octets');
is(get('/api/tickets/00000000000000000000000000000000/event.ics')->{status},
   404, 'an unknown code: 404');

$m = wait_mail('carl@example.org', qr/^Your ticket for/);
ok($m, 'the confirmation mail arrives');
like($m->{text} // '', qr/Monday 10 March 2031, 10:00 \(Europe\/Paris\)/,
     'with the time where the event is');
like($m->{text} // '', qr{\Q$origin\E/api/tickets/$code/event\.ics},
     'the calendar link');
like($m->{text} // '', qr{\Q$origin\E/my-events\.html}, 'and my events');

# Signed in as that address: confirmed at once.
$r = register($ev, $tt->{Free}, 'carl@example.org', cookie => $carl);
is($r->{status}, 409, 'carl again while he has a ticket: 409');

my $dora = $t->sign_in('dora@example.org');
$r = register($ev, $tt->{Free}, 'dora@example.org', cookie => $dora);
is($r->{status}, 201, 'signed in as the address: 201 at once, no link');
is(body_of($r)->{registration}{status}, 'issued', 'issued');
my $dora_code = body_of($r)->{registration}{ticket}{code};
is(sql("SELECT count(*) FROM jobs.jobs WHERE payload->>'template' = "
       . "'registration_link' AND payload->>'to' = 'dora\@example.org'"),
   0, 'no link mailed');

$r = post("/api/tickets/$dora_code/cancel", undef, cookie => $carl);
is($r->{status}, 404, 'cancelling someone else\'s ticket: 404');
is(sold($tt->{Free}), 2, 'two free places taken');
$r = post("/api/tickets/$dora_code/cancel", undef, cookie => $dora);
is($r->{status}, 200, 'dora cancels her free ticket');
is(sold($tt->{Free}), 1, 'the place is free again');

# ------------------------------------------------------------------ 200 for 50 places

{
    my $n = 200;
    my @emails = map { sprintf('crowd%03d@example.org', $_) } 1 .. $n;
    my $t0 = time;

    my @st;
    push @st, register($big, $btt->{Seat}, $_)->{status} for @emails;
    is(scalar(grep { $_ == 202 } @st), $n, "$n registrations: 202 each");

    # The links as the participants get them: by mail.
    my %tok;
    wait_for(60, sub {
        for my $msg ($smtp->messages) {
            next unless $msg =~ /^To: (crowd\d+\@example\.org)\r$/m;
            my $to = $1;
            next if $tok{$to};
            my $text = '';
            while ($msg =~ /\r\n\r\n([A-Za-z0-9+\/=\r\n]{40,}?)(?:\r\n--|\z)/g) {
                $text .= decode_base64($1);
            }
            $tok{$to} = token_of($text);
        }
        keys %tok >= $n;
    }, 0.25);
    is(scalar(grep { $tok{$_} } @emails), $n, "$n links read from the SMTP sink");

    # All confirmations at once: 200 connections, every request written
    # before any answer is read.
    my @answers = concurrent_posts('/api/auth/confirm',
        map { $json->encode({ token => $tok{$_} // 'x' }) } @emails);

    my ($issued, $soldout, $other) = (0, 0, 0);
    for my $a (@answers) {
        my $reg = ($t->json($a) || {})->{registrations}[0] || {};
        if ($a->{status} == 200 && ($reg->{status} // '') eq 'issued') {
            $issued++;
        } elsif ($a->{status} == 200 && ($reg->{status} // '') eq 'sold_out'
                 && ($reg->{message} // '') =~ /^Sorry, "Seat" for "Big Free Meetup" is sold out\.$/)
        {
            $soldout++;
        } else {
            $other++;
            diag("unexpected answer: $a->{status} $a->{content}") if $other < 4;
        }
    }
    is($issued, 50, 'exactly 50 of 200 concurrent confirmations got a ticket');
    is($soldout, 150, '150 were told, in a sentence, that it is sold out');
    is($other, 0, 'no other answer');
    is(sold($btt->{Seat}), 50, 'sold = 50 in the database');
    is(sql("SELECT count(*) FROM app.tickets WHERE event_id = $big AND status = 'valid'"),
       50, '50 valid tickets');
    $r = register($big, $btt->{Seat}, 'late@example.org');
    is($r->{status}, 409, 'registering now: 409');
    like(body_of($r)->{error}{message} // '', qr/sold out/, 'sold out');
    note(sprintf('200 registrations, mails and confirmations: %.1f s', time - $t0));
}

# ------------------------------------------------------------------ paid ticket

my $req_count = $stripe->count;
my ($eve_b, $eve) = register_confirmed($ev, $tt->{Supporter}, 'eve@example.org',
                                       name => 'Eve');
my $eve_reg = $eve_b->{registrations}[0]{id};
is($eve_b->{registrations}[0]{status}, 'held', 'paid ticket: the place is held');
is($eve_b->{registrations}[0]{amount_minor}, 2500, 'at the price');

my $session;
$r = wait_for(15, sub {
    my $r = get("/api/registrations/$eve_reg", cookie => $eve);
    body_of($r)->{checkout_url} ? $r : undef;
});
ok($r, 'the registration shows the checkout URL once Stripe answered')
    or diag(sql("SELECT kind, state, last_error FROM jobs.jobs WHERE kind = 'call'"));
my $checkout_url = body_of($r)->{checkout_url} // '';
like($checkout_url, qr{^\Q${\ $stripe->url}\E/pay/cs_test_[0-9a-f]+$},
     'on the Stripe(-format) server');
($session) = $checkout_url =~ m{/pay/(cs_test_[0-9a-f]+)$};

my ($create) = grep {
    $_->{path} eq '/v1/checkout/sessions'
    && grep { lc $_->[0] eq 'idempotency-key' && $_->[1] eq "checkout-$eve_reg" }
       @{$_->{headers}}
} $stripe->requests;
ok($create, 'the jobs runner called POST /v1/checkout/sessions');
my %h = map { lc $_->[0] => $_->[1] } @{$create->{headers} || []};
is($h{authorization}, "Bearer $KEY", 'with the secret key');
is($h{'idempotency-key'}, "checkout-$eve_reg", 'and an Idempotency-Key');
my $f = $create->{form} || {};
is($f->{'payment_intent_data[transfer_data][destination]'}, 'acct_1RustEvents',
   'a destination charge to the organiser\'s account');
ok(!exists $f->{'payment_intent_data[application_fee_amount]'},
   'no application fee: the whole price is the organiser\'s');
is($f->{'line_items[0][price_data][unit_amount]'}, 2500, 'amount');
is($f->{'line_items[0][price_data][currency]'}, 'eur', 'currency');
is($f->{'line_items[0][quantity]'}, 1, 'one ticket');
is($f->{customer_email}, 'eve@example.org', 'customer email');
is($f->{'metadata[registration_id]'}, $eve_reg, 'registration in the metadata');
is($f->{success_url},
   "$origin/registration.html?id=$eve_reg&session_id={CHECKOUT_SESSION_ID}",
   'success_url');

$r = HTTP::Tiny->new->get($checkout_url);
is($r->{status}, 200, 'the hosted payment page');
like($r->{content}, qr/25\.00 EUR/, 'shows the amount');

$r = HTTP::Tiny->new(max_redirect => 0)->post($checkout_url);
is($r->{status}, 303, 'paying redirects back');
is($r->{headers}{location},
   "$origin/registration.html?id=$eve_reg&session_id=$session",
   'to the registration page with the session id');

my ($paid) = grep { $_->{type} eq 'checkout.session.completed' } $stripe->webhooks;
ok($paid, 'Stripe sent checkout.session.completed');
is($paid->{status}, 200, 'nginx answered 200');
is(($t->json({ content => $paid->{response} }) || {})->{outcome}, 'issued',
   'the ticket was issued');

$r = get("/api/registrations/$eve_reg", cookie => $eve);
is(body_of($r)->{status}, 'issued', 'the registration says issued');
ok(body_of($r)->{ticket}{code}, 'with the ticket');

$m = wait_mail('eve@example.org', qr/^Your ticket for/);
ok($m, 'the confirmation mail arrives');

my $tickets = sql("SELECT count(*) FROM app.tickets");

# Replayed: the same bytes and signature again.
$r = send_webhook($paid->{body}, $paid->{signature});
is($r->{status}, 400, 'a replayed webhook: 400');
like(body_of($r)->{error}{message} // '', qr/replayed/, 'replayed');

# Stripe's redelivery: the same event signed anew (another t).
my ($t0) = $paid->{signature} =~ /t=(\d+)/;
$r = send_webhook($paid->{body}, sign($paid->{body}, $t0 + 7));
is($r->{status}, 200, 'Stripe\'s redelivery (same event, new t): 200');
is(body_of($r)->{duplicate}, JSON::PP::true(), 'a duplicate');
is(sql("SELECT count(*) FROM app.tickets"), $tickets, 'nothing new issued');

# Tampered, stale, unsigned.
(my $tampered = $paid->{body}) =~ s/"amount_total": 2500/"amount_total": 1/;
isnt($tampered, $paid->{body}, 'a tampered body');
$r = send_webhook($tampered, $paid->{signature});
is($r->{status}, 400, 'with the original signature: 400');
(my $fresh = $paid->{body}) =~ s/"id": "evt_[0-9a-f]+"/"id": "evt_forged"/;
$r = send_webhook($fresh, sign($fresh, time - 600));
is($r->{status}, 400, 'signed 10 minutes ago: 400');
$r = send_webhook($fresh, "t=${\ int time},v1=" . hmac_sha256_hex("x", 'whsec_wrong'));
is($r->{status}, 400, 'signed with another secret: 400');
$r = send_webhook($fresh, undef);
is($r->{status}, 400, 'unsigned: 400');
is(sql("SELECT count(*) FROM app.stripe_events WHERE id = 'evt_forged'"), 0,
   'none of them reached the database');
is(sql("SELECT count(*) FROM app.tickets"), $tickets, 'and no ticket');

# ------------------------------------------------------------------ holds released

# The session expires (the participant never paid).
my ($fay_b, $fay) = register_confirmed($ev, $tt->{Supporter}, 'fay@example.org');
my $fay_reg = $fay_b->{registrations}[0]{id};
my $before = sold($tt->{Supporter});
$r = wait_for(15, sub {
    my $r = get("/api/registrations/$fay_reg", cookie => $fay);
    body_of($r)->{checkout_url} ? $r : undef;
});
my ($fay_session) = (body_of($r)->{checkout_url} // '') =~ m{/pay/(cs_test_\w+)$};
ok($fay_session, 'fay\'s checkout session');
$r = stripe_api('POST', "/v1/checkout/sessions/$fay_session/expire");
is($r->{status}, 200, 'Stripe expires it');
$r = get("/api/registrations/$fay_reg", cookie => $fay);
is(body_of($r)->{status}, 'expired', 'checkout.session.expired: the registration expired');
like(body_of($r)->{error} // '', qr/given back/, 'saying why');
is(sold($tt->{Supporter}), $before - 1, 'the place is back');

# Stripe refuses to create the session.
$stripe->fail_next(400);
$before = sold($tt->{Supporter});
my ($gus_b, $gus) = register_confirmed($ev, $tt->{Supporter}, 'gus@example.org');
my $gus_reg = $gus_b->{registrations}[0]{id};
is($gus_b->{registrations}[0]{status}, 'held', 'gus\'s place is held');
$r = wait_for(15, sub {
    my $r = get("/api/registrations/$gus_reg", cookie => $gus);
    body_of($r)->{status} eq 'failed' ? $r : undef;
});
ok($r, 'Stripe answered 400: the registration failed')
    or diag(sql("SELECT state, last_error FROM jobs.jobs WHERE kind = 'call'"));
like(body_of($r)->{error} // '', qr/could not be started/, 'with a sentence');
is(sold($tt->{Supporter}), $before, 'the place is back');

# The hold ran out (gina, 2 seconds, registered at the start).
$r = wait_for(15, sub {
    sql("SELECT status FROM app.registrations WHERE id = $gina_reg") eq 'expired';
});
ok($r, 'gina\'s hold ran out: expired by the hold job');
is(sql("SELECT updated_at - confirmed_at >= interval '2 seconds' "
       . "FROM app.registrations WHERE id = $gina_reg"), 't',
   'not before its 2 seconds');
my $gina_session = sql("SELECT checkout_session_id FROM app.registrations "
                       . "WHERE id = $gina_reg");
ok(wait_for(10, sub {
       grep { $_->{path} eq "/v1/checkout/sessions/$gina_session/expire" }
       $stripe->requests }),
   'and her Checkout Session was expired at Stripe');
is(sql("SELECT count(*) FROM app.registrations WHERE ticket_type_id = "
       . "$tt->{Supporter} AND status IN ('held', 'issued')"),
   sold($tt->{Supporter}), 'sold counts exactly the places held or issued');

# ------------------------------------------------------------------ cancellation

$r = post("/api/orgs/$org_b/events/$ev/cancel", undef, cookie => $bob);
is($r->{status}, 404, 'another organisation cannot cancel it: 404');

$r = get("/api/orgs/$org/events/$ev/registrations", cookie => $ann);
is($r->{status}, 200, 'the organiser lists the registrations');
my %by = map { $_->{email} => $_ } @{body_of($r)->{registrations}};
is($by{'eve@example.org'}{status}, 'issued', 'eve issued');
is($by{'eve@example.org'}{consent_version}, 'privacy-1', 'with her consent record');

my $eve_pi = sql("SELECT payment_intent FROM app.registrations WHERE id = $eve_reg");
like($eve_pi, qr/^pi_test_/, 'eve\'s payment intent is known');

$r = post("/api/orgs/$org/events/$ev/cancel", undef, cookie => $ann);
is($r->{status}, 200, 'the organiser cancels the event');
is(body_of($r)->{tickets_cancelled}, 2, 'two tickets cancelled (carl, eve)');
is(body_of($r)->{refunds}, 1, 'one refund');
is(sql("SELECT count(*) FROM app.tickets WHERE event_id = $ev AND status = 'valid'"),
   0, 'no valid ticket left');

ok(wait_mail('carl@example.org', qr/^Cancelled: RustConf/), 'carl is told');
$m = wait_mail('eve@example.org', qr/^Cancelled: RustConf/);
like($m->{text} // '', qr/25\.00 EUR is refunded/, 'eve is told of her refund');

wait_for(15, sub { grep { $_->{path} eq '/v1/refunds' } $stripe->requests });
my ($refund) = grep { $_->{path} eq '/v1/refunds' } $stripe->requests;
ok($refund, 'the refund call reached Stripe');
is($refund->{form}{payment_intent}, $eve_pi, 'for eve\'s payment');
is($refund->{form}{reverse_transfer}, 'true', 'taking it back from the organiser');
ok(wait_for(10, sub {
       sql("SELECT refund_id FROM app.registrations WHERE id = $eve_reg") =~ /^re_test_/ }),
   'the refund is recorded');
is(body_of(get("/api/registrations/$eve_reg", cookie => $eve))->{refunded},
   JSON::PP::true(), 'eve sees it refunded');
like(get("/api/tickets/$code/event.ics")->{content}, qr/\r\nSTATUS:CANCELLED\r\n/,
     'the calendar file says cancelled');
is(register($ev, $tt->{Free}, 'new@example.org')->{status}, 409,
   'a cancelled event takes no registrations');

is(sql("SELECT count(*) FROM jobs.jobs WHERE state = 'dead'"), 0, 'no dead job');

done_testing;
