#!/usr/bin/perl

# Events and ticketing (issue 4, sql/005_events.sql) end to end: sign in
# through the magic-link flow, create an organisation (the re-issued cookie
# carries the organiser membership), create an event and a ticket type,
# publish (and the validation failures naming the field), the public
# listing with date filters and title search, the detail with ticket types,
# tenant isolation between organisations, invitations, and take_ticket
# under 200 concurrent attempts for 50 places.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(field_of);
use JSON::PP;

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;    # session.key in the test directory

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth events)) ]}
    }
EOF

$t->run;

my $port = $t->port;
my $origin = "http://127.0.0.1:$port";
my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers
# (as in t/50-auth.t)

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h;
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin;
    }
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }

# ------------------------------------------------------------------ orgs

my $ann = $t->sign_in('ann@example.org');
my $bob = $t->sign_in('bob@example.org');
ok($ann && $bob, 'ann and bob signed in through the magic link');

my $r = post('/api/orgs', { name => 'Org A' });
is($r->{status}, 401, 'creating an organisation needs a session');

$r = post('/api/orgs', { name => '' }, cookie => $ann);
is(field_of($r), '400 name', 'an organisation needs a name');

$r = post('/api/orgs', { name => 'Org A' }, cookie => $ann);
is($r->{status}, 201, 'Org A created: 201');
my $org_a = body_of($r)->{id};
ok($org_a, 'with its id');
my $ann2 = $t->session_cookie($r);
ok($ann2, 'the session is re-issued');

$r = get("/api/orgs/$org_a/events", cookie => $ann);
is($r->{status}, 403, 'the old cookie has no organiser membership: 403');

$ann = $ann2;
is_deeply(body_of(get('/api/me', cookie => $ann))->{memberships},
          [{ role => 'organiser', org_id => $org_a }],
          '/api/me shows the organiser membership');

$r = post('/api/orgs', { name => 'Org B' }, cookie => $bob);
my $org_b = body_of($r)->{id};
$bob = $t->session_cookie($r);
ok($org_b && $bob, 'bob creates Org B');

# ------------------------------------------------------------------ events

my $start = '2031-03-10T09:00:00Z';
my $end = '2031-03-11T17:00:00Z';
my %event = (title => 'RustConf 100% Edition_31',
             business_type => 'conference',
             starts_at => $start, ends_at => $end,
             time_zone => 'Europe/Paris', description => 'Talks.',
             capacity => 300, main_stage => JSON::PP::true(),
             breakouts => JSON::PP::false(), team_size => 4,
             cover_url => 'https://example.org/cover.png');

for my $case (
    [title => '', 'empty title'],
    [title => 'x' x 201, 'title over 200 characters'],
    [description => 'x' x 10001, 'description over 10000 characters'],
    [business_type => 'party', 'unknown business type'],
    [starts_at => 'tomorrow-ish', 'invalid start'],
    [ends_at => '2031-03-10T08:00:00Z', 'end before start'],
    [capacity => -5, 'negative capacity'],
    [team_size => 'four', 'team size not a number'],
    [cover_url => 'javascript:alert(1)', 'cover_url not http(s)'],
) {
    my ($f, $v, $name) = @$case;
    $r = post("/api/orgs/$org_a/events", { %event, $f => $v }, cookie => $ann);
    is(field_of($r), "400 $f", "event_create: $name is 400 naming $f");
}

$r = post("/api/orgs/$org_a/events", \%event, cookie => $ann);
is($r->{status}, 201, 'event created: 201');
my $ev = body_of($r);
my $ev_id = $ev->{id};
is($ev->{status}, 'draft', 'a draft');
is($ev->{time_zone}, 'Europe/Paris', 'time zone kept');
is($ev->{team_size}, 4, 'team size kept');

is(get("/api/events/$ev_id")->{status}, 404, 'a draft is not public');

$r = post("/api/orgs/$org_a/events/$ev_id/publish", undef, cookie => $ann);
is(field_of($r), '400 ticket_types', 'publish without ticket types: 400');

$r = post("/api/orgs/$org_a/events/$ev_id/ticket-types",
          { name => 'VIP', price_minor => 9900, quantity => 10 },
          cookie => $ann);
is(field_of($r), '400 currency', 'a paid ticket type needs a currency');

$r = post("/api/orgs/$org_a/events/$ev_id/ticket-types",
          { name => 'VIP', price_minor => 9900, currency => 'EUR',
            quantity => 10 }, cookie => $ann);
is($r->{status}, 201, 'paid ticket type created');
my $vip = body_of($r)->{id};

$r = post("/api/orgs/$org_a/events/$ev_id/publish", undef, cookie => $ann);
is(field_of($r), '400 stripe_account',
   'paid tickets without a Stripe account: 400');

$r = req('DELETE', "/api/orgs/$org_a/events/$ev_id/ticket-types/$vip",
         undef, cookie => $ann);
is($r->{status}, 200, 'the paid ticket type deleted');

$r = post("/api/orgs/$org_a/events/$ev_id/ticket-types",
          { name => 'Free', quantity => 50 }, cookie => $ann);
is($r->{status}, 201, 'free ticket type created');
my $free = body_of($r)->{id};

$r = req('PATCH', "/api/orgs/$org_a/events/$ev_id/ticket-types/$free",
         { quantity => 0 }, cookie => $ann);
is(field_of($r), '400 quantity', 'quantity 0: 400');

$t->psql("UPDATE app.events SET starts_at = now() - interval '1 hour' "
         . "WHERE id = $ev_id");
$r = post("/api/orgs/$org_a/events/$ev_id/publish", undef, cookie => $ann);
is(field_of($r), '400 starts_at', 'an event that has started: 400');

$r = req('PATCH', "/api/orgs/$org_a/events/$ev_id",
         { starts_at => $start }, cookie => $ann);
is($r->{status}, 200, 'event_update: 200');
is(body_of($r)->{title}, $event{title}, 'the fields not sent are kept');

$r = req('PATCH', "/api/orgs/$org_a/events/$ev_id",
         { title => 'y' x 201 }, cookie => $ann);
is(field_of($r), '400 title', 'event_update: over-long title');

$r = post("/api/orgs/$org_a/events/$ev_id/publish", undef, cookie => $ann);
is($r->{status}, 200, 'published');
is(body_of($r)->{status}, 'published', 'status published');

# A second (draft) event of Org A and a published one of Org B.
$r = post("/api/orgs/$org_a/events",
          { %event, title => 'Draft meetup', business_type => 'meetup' },
          cookie => $ann);
my $draft_id = body_of($r)->{id};

$r = post("/api/orgs/$org_b/events",
          { %event, title => 'Bob Hack Night', business_type => 'hackathon',
            starts_at => '2031-06-01T18:00:00Z',
            ends_at => '2031-06-01T23:00:00Z' }, cookie => $bob);
my $b_ev = body_of($r)->{id};
post("/api/orgs/$org_b/events/$b_ev/ticket-types",
     { name => 'Seat', quantity => 20 }, cookie => $bob);
is(post("/api/orgs/$org_b/events/$b_ev/publish", undef,
        cookie => $bob)->{status}, 200, 'Org B\'s event published');

# ------------------------------------------------------------------ org lists

$r = get("/api/orgs/$org_a/events", cookie => $ann);
is($r->{status}, 200, 'org_events: 200');
is_deeply([map { $_->{title} } @{body_of($r)->{current}}],
          [$event{title}, 'Draft meetup'],
          'Org A\'s events, drafts included, not Org B\'s');

$t->psql("INSERT INTO app.events (organisation_id, title, business_type, "
         . "starts_at, ends_at, status) VALUES ($org_a, 'Last year', 'meetup', "
         . "now() - interval '1 year', now() - interval '1 year' + interval '2 hours', "
         . "'published')");
is_deeply([map { $_->{title} } @{body_of(get("/api/orgs/$org_a/events",
                                             cookie => $ann))->{past}}],
          ['Last year'], 'past events listed apart');

# ------------------------------------------------------------------ isolation

is(get("/api/orgs/$org_b/events", cookie => $ann)->{status}, 403,
   'ann cannot list Org B\'s events: 403');
is(post("/api/orgs/$org_b/events", \%event, cookie => $ann)->{status}, 403,
   'nor create one there: 403');
is(get("/api/orgs/$org_a/events/$b_ev", cookie => $ann)->{status}, 404,
   'Org B\'s event through Org A\'s URL: 404');
is(req('PATCH', "/api/orgs/$org_a/events/$b_ev", { title => 'mine' },
       cookie => $ann)->{status}, 404, 'update of Org B\'s event: 404');
is(post("/api/orgs/$org_a/events/$b_ev/publish", undef,
        cookie => $ann)->{status}, 404, 'publish of Org B\'s event: 404');
is(post("/api/orgs/$org_a/events/$b_ev/ticket-types",
        { name => 'x', quantity => 1 }, cookie => $ann)->{status}, 404,
   'ticket type on Org B\'s event: 404');
is(req('DELETE', "/api/orgs/$org_a/events/$ev_id/ticket-types/$free",
       undef, cookie => $bob)->{status}, 403,
   'bob on Org A\'s URL: 403');
is($t->psql("SELECT title FROM app.events WHERE id = $b_ev"),
   'Bob Hack Night', 'Org B\'s event unchanged');

# ------------------------------------------------------------------ listing

sub titles {
    my ($query) = @_;
    my $r = get("/api/events$query");
    return "$r->{status}" if $r->{status} != 200;
    return join ',', map { $_->{title} } @{body_of($r)->{items}};
}

is(titles(''), "$event{title},Bob Hack Night",
   'listing: published upcoming events only');
is(titles('?q=rustconf'), $event{title}, 'q: case-insensitive title search');
is(titles('?q=hack%20night'), 'Bob Hack Night', 'q: %-escapes decoded');
is(titles('?q=hack+night'), 'Bob Hack Night', 'q: + is a space');
is(titles('?q=100%25'), $event{title}, 'q: an escaped % is literal');
is(titles('?q=n_3'), $event{title}, 'q: _ is literal');
is(titles('?q=n__'), '', 'q: _ is not a wildcard');
is(titles('?q=%25'), $event{title}, 'q: % alone is not a wildcard');
is(titles('?from=2031-04-01'), 'Bob Hack Night', 'from');
is(titles('?to=2031-03-10'), $event{title}, 'to (the day an event starts)');
is(titles('?from=2031-03-11&to=2031-03-11'), $event{title},
   'from/to: an event overlapping the day');
is(titles('?from=2031-07-01'), '', 'from after everything');
is(titles('?type=hackathon&q=night'), 'Bob Hack Night', 'type and q');
is(titles('?from=2031-13-45'), '400', 'an invalid date: 400');
is(titles('?from=2031-05-01&to=2031-04-01'), '400', 'to before from: 400');

$r = get("/api/events/$ev_id");
is($r->{status}, 200, 'event detail: 200');
my $d = body_of($r);
is($d->{organisation}, 'Org A', 'with the organisation\'s name');
is_deeply([map { [$_->{name}, $_->{price_minor}, $_->{currency},
                  $_->{remaining}] } @{$d->{ticket_types}}],
          [['Free', 0, undef, 50]], 'with the ticket types and remaining');
ok($d->{main_stage} && !$d->{breakouts}, 'and the new fields');

# ------------------------------------------------------------------ invites

$r = post("/api/orgs/$org_a/invites", { email => 'Carol@Example.org' },
          cookie => $ann);
is($r->{status}, 201, 'invite: 201');
is($t->psql("SELECT payload->>'subject' FROM jobs.jobs "
            . "WHERE payload->>'to' = 'carol\@example.org'"),
   'You are now an organiser of Org A', 'the invite mail is queued');
my $carol = $t->sign_in('carol@example.org');
is(get("/api/orgs/$org_a/events", cookie => $carol)->{status}, 200,
   'carol manages Org A once signed in');
is(post("/api/orgs/$org_b/invites", { email => 'eve@example.org' },
        cookie => $ann)->{status}, 403, 'ann cannot invite to Org B');
is(post("/api/orgs/$org_a/invites", { email => 'nope' },
        cookie => $ann)->{status}, 400, 'invite: bad email 400');

# ------------------------------------------------------------------ take_ticket

# 200 attempts, 50 at a time (pgbench clients), for 50 places.
$t->psql("CREATE TABLE public.t_take (ok boolean NOT NULL)");
my $script = "$dir/take.sql";
open(my $fh, '>', $script) or die "$script: $!\n";
print $fh "INSERT INTO public.t_take (ok) SELECT app.take_ticket(:tt);\n";
close $fh;
{
    local $ENV{PGHOST} = $t->pghost;
    local $ENV{PGPORT} = $t->pgport;
    my $cmd = join ' ', 'pgbench', '-n', '-U', 'postgres', '-c', '50',
        '-j', '10', '-t', '4', '-D', "tt=$free", '-f', $script,
        $t->dbname, '>', "$dir/pgbench.out", '2>&1';
    is(system($cmd), 0, 'pgbench ran 200 take_ticket calls, 50 at once')
        or diag(`cat $dir/pgbench.out`);
}
is($t->psql("SELECT count(*) FILTER (WHERE ok) || '/' || count(*) "
            . "FROM public.t_take"), '50/200',
   'exactly 50 of 200 concurrent attempts got a ticket');
is($t->psql("SELECT sold FROM app.ticket_types WHERE id = $free"), 50,
   'sold is exactly 50');
is(body_of(get("/api/events/$ev_id"))->{ticket_types}[0]{remaining}, 0,
   'the detail shows none remaining');
is(req('DELETE', "/api/orgs/$org_a/events/$ev_id/ticket-types/$free",
       undef, cookie => $ann)->{status}, 409,
   'a ticket type with sales cannot be deleted: 409');

done_testing;
