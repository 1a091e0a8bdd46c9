#!/usr/bin/perl

# The event pages in headless Chromium, used the way people use them:
# t/browser/events.mjs runs the flows below in order in one Chromium, each
# person (organiser, visitor, second participant, stranger, buyer) in a
# browser context of their own that stays signed in from flow to flow
# (t/browser/flow.mjs); this file judges what they saw.
#
#   organiser   sign in from organiser/, create the organisation, a draft
#               (sentences at the fields: the form's own, and the API's
#               for an end before the start), ticket types, publishing
#               refused at the ticket types, then published
#   browse      events.html: pages with "More", type filter, title search
#               with a date range, the back button; the event page and its
#               form's sentences (consent unticked)
#   register    register, the mailed link, confirm.html, registration.html
#               showing the ticket, its .ics, my-events.html; registering
#               again while signed in
#   teams       a second participant; the organiser makes teams, moves a
#               person, sets the deadline; the participant opens team.html
#               and hands in; someone signed out asks for the team link;
#               the organiser sees the submission; the participant cancels
#               the free ticket on my-events.html
#   paid        a paid ticket through the local Stripe-format server
#               (t/lib/stripe_server.py): the Stripe account asked for at
#               publishing, registration.html goes to the payment page,
#               "Back", "Pay", back to the ticket
#
# Flows needing conf/api/registration.conf or conf/api/teams.conf run when
# those exist (and the paid one with python3-aiosmtpd for the jobs
# runner's mail).  The mail is read from the jobs table through a
# test-only location.  PLATFORM_SCREENSHOTS=DIR keeps a PNG of each step.

use strict;
use warnings;
use utf8;

use Test::More;
use Test::Platform qw(wait_for browser_dir);
use JSON::PP;

binmode(Test::More->builder->$_, ':utf8') for qw(output failure_output todo_output);

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = browser_dir();
my $tdir = $t->testdir;

$t->key_file;    # session.key in the test directory

my %have = map { $_ => -f "$root/conf/api/$_.conf" } qw(registration teams hls);
my @areas = ('core', 'auth', 'events', grep { $have{$_} } qw(registration teams hls));

# Other organisers' events, so the list has two pages and the filters
# something to leave out; the test-only mailbox: the newest mail job to an
# address (sql/004_jobs.sql), optionally of one template.
$t->psql(<<'EOF');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Seed Org')
           RETURNING id)
INSERT INTO app.events (organisation_id, title, business_type, starts_at,
                        ends_at, time_zone, status)
SELECT o.id, v.title, v.type, v.starts::timestamptz,
       v.starts::timestamptz + interval '3 hours', 'UTC', v.status
FROM o, (VALUES
    ('Rust Meetup Berlin', 'meetup', '2031-03-05 18:00Z', 'published'),
    ('Rust Conference', 'conference', '2031-03-20 09:00Z', 'published'),
    ('Data Workshop', 'workshop', '2031-02-01 09:00Z', 'published'),
    ('Webinar on Testing', 'webinar', '2031-04-02 15:00Z', 'published'),
    ('Go Hackathon', 'hackathon', '2031-05-01 09:00Z', 'published'),
    ('Community call 1', 'other', '2031-06-01 17:00Z', 'published'),
    ('Community call 2', 'other', '2031-06-02 17:00Z', 'published'),
    ('Community call 3', 'other', '2031-06-03 17:00Z', 'published'),
    ('Community call 4', 'other', '2031-06-04 17:00Z', 'published'),
    ('Community call 5', 'other', '2031-06-05 17:00Z', 'published'),
    ('Community call 6', 'other', '2031-06-06 17:00Z', 'published'),
    ('Rust Draft', 'hackathon', '2031-03-15 09:00Z', 'draft'),
    ('Rust Past', 'hackathon', '2021-03-15 09:00Z', 'published'))
    AS v(title, type, starts, status);

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
EOF

my $api = $t->api_conf(@areas);

# Paid tickets: the jobs runner (mail to an SMTP sink, Checkout Sessions
# from the Stripe-format server), the signed webhook as conf/nginx.conf
# has it.
my $paid = $have{registration} && -d '/usr/lib/python3/dist-packages/aiosmtpd';
my ($jobs, $webhook, $stripe) = ('', '');
if ($paid) {
    my ($key, $whsec) = ('sk_test_56browser0123456789', 'whsec_56browserSecret0123456789');
    for (['stripe.key', $key], ['stripe-webhook.secret', $whsec]) {
        open(my $fh, '>', "$tdir/$_->[0]") or die "$_->[0]: $!\n";
        print $fh "$_->[1]\n";
        close $fh;
    }
    my $smtp = $t->smtp_sink;
    $stripe = $t->stripe_server(key => $key, webhook_secret => $whsec,
        webhook_url => 'http://127.0.0.1:' . $t->port . '/api/stripe/webhook');
    my ($sp, $stp) = ($smtp->port, $stripe->port);
    $jobs = <<"EOF";
    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:$sp;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service stripe http://127.0.0.1:$stp bearer=$tdir/stripe.key;
EOF
    $webhook = <<"EOF";
        location = /api/stripe/webhook {
            platform_webhook_signature stripe $tdir/stripe-webhook.secret
                                       tolerance=300s;
            platform_query POST api.stripe_webhook(\$platform_body::jsonb,
                \$platform_signature_time::bigint);
        }
EOF
}

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $tdir/session.key;
    platform_session_secure off;
$jobs
    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        $api
$webhook

        # Test only: a cover image, and the mailbox.
        location = /test/cover.svg {
            default_type image/svg+xml;
            return 200 '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="300"><rect width="1200" height="300" fill="#2f5bd3"/><text x="40" y="170" font-size="64" fill="#fff">RustFest</text></svg>';
        }
        location = /test/last-mail {
            platform_query GET api.t_last_mail(\$arg_email, \$arg_template);
        }
    }
EOF

$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
# The flows, in one Chromium (t/browser/events.mjs): those whose APIs the
# server has.
my @flows = ('organiser', 'browse',
             $have{registration} ? 'register' : (),
             $have{registration} && $have{teams} ? 'teams' : (),
             $paid ? 'paid' : ());
my $res = `node '$dir/events.mjs' '$base' @flows 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $all = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'events.mjs finished: ' . join(' ', @flows)) or diag($res);
ok($all, 'events.mjs reported') or diag($res);
$all ||= {};

# The result of one flow, after the checks every flow gets.
sub flow {
    my ($name) = @_;
    my $r = $all->{$name} || {};
    note("$name: $r->{seconds} s: "
         . join(', ', map { "$_ $r->{step_seconds}{$_}" } @{$r->{steps} || []}))
        if $r->{seconds};
    is_deeply($r->{errors}, [], "$name: no script errors, failed loads or 4xx pages")
        or diag(explain($r->{errors}));
    return $r;
}

sub failures { [grep { / [45]\d\d$/ } @{$_[0] || []}] }

my $title = 'RustFest Hackathon';

# ------------------------------------------------------------- organiser

my $o = flow('organiser');

is_deeply($o->{steps}, ['organisation', 'draft', 'ticket types', 'published'],
          'organiser: every step ran');
is($o->{signed_out}, 'Sign in to organise events', 'organiser/ offers to sign in');
is($o->{org_empty}, 'Please enter the name of your organisation.',
   'an organisation needs a name: a sentence at the field');
is($o->{org_created}, 'Rust Community is created. You are its organiser.',
   'the organisation is created');
like($o->{current_empty}, qr/^No current events/, 'with no events yet');
is($o->{org_title}, 'Rust Community', 'the organiser page shows the organisation\'s name');
is($o->{stripe_current}, 'No Stripe account is saved yet.', 'and its Stripe account (none)');
is($o->{organisers}, 'olga@example.org', 'and its organisers');

is($o->{title_missing}, 'Please give the event a title.',
   'the editor: a missing title, at the field');
is($o->{title_invalid}, 'true', 'the field is marked invalid');
is($o->{end_error}, 'The end must be after the start.',
   'an end before the start: the API\'s sentence at the "Ends" field')
    or diag(explain($o));
is($o->{end_described}, 'ends_at-error', 'which describes the field');
is($o->{title_error_gone}, 0, 'the fixed title has no error any more');
is($o->{saved}, 'The draft is saved. Add its ticket types below, then publish it.',
   'fixed: the draft is saved');
like($o->{event} // '', qr/^\d+$/, 'the address names the new event');
is($o->{status_draft}, 'Draft', 'as a draft');
is($o->{end_error_gone}, 0, 'the error is gone');

is($o->{publish_error}, 'Add at least one ticket type first.',
   'publishing without ticket types: the API\'s sentence at the ticket types');
is($o->{publish_message}, 'Add at least one ticket type first.',
   'and by the button');
is($o->{quantity_missing}, 'Please enter how many places there are (at least 1).',
   'a ticket type without places is refused at the field');
like($o->{tt_added} // '', qr/^Standard is added \(Free, 50 places\)\.$/,
     'a free ticket type is added');
is($o->{tt_changed}, 'Community pass is saved.', 'and renamed');
is($o->{tt_deleted}, 'Spare is deleted.', 'another is added and deleted');
is_deeply($o->{ticket_rows},
          ['Community pass | Free | 0 of 50 taken | Until the event ends'],
          'the ticket types table');

is($o->{published}, 'Published: the event is listed for everyone.', 'published');
is($o->{status}, 'Published', 'the status says so');
is($o->{public_link}, "/event.html?id=$o->{event}", 'with a link to the public page');
is($o->{publish_error_gone}, 0, 'no field errors left');
is($o->{listed}[0][0], $title, "the organisation's list shows the event");
is($o->{listed}[0][2], 'Published', 'as published');
is($o->{invited}, 'otto@example.org is now an organiser; we emailed them.',
   'another organiser is added');
like($o->{listed}[0][1] // '', qr/10:00(\s?AM)?.*(18:00|6:00\sPM) Europe\/Paris$/,
     'in its own time zone');

my ($org, $event) = ($o->{org}, $o->{event});

is($t->psql("SELECT starts_at AT TIME ZONE 'UTC', ends_at AT TIME ZONE 'UTC', "
            . "time_zone, team_size, breakouts, main_stage, capacity, cover_url "
            . "FROM app.events WHERE id = " . ($event // 0)),
   "2031-03-10 09:00:00|2031-03-11 17:00:00|Europe/Paris|3|t|f|100|$base/test/cover.svg",
   'stored: wall times in Europe/Paris as instants, and every field');
is($t->psql("SELECT name, price_minor, currency IS NULL, quantity FROM "
            . "app.ticket_types WHERE event_id = " . ($event // 0)),
   'Community pass|0|t|50', 'the ticket type as typed');

is_deeply(failures($o->{api}{organiser}),
          ['GET /api/me 401', 'POST /api/orgs/' . ($org // '') . '/events 400',
           'POST /api/orgs/' . ($org // '') . "/events/$event/publish 400"],
          'organiser: the only API failures are the ones provoked')
    or diag(explain($o->{api}));

# ------------------------------------------------------------- browse

my $b = flow('browse');

is_deeply($b->{steps}, ['list', 'filters', 'event page'], 'browse: every step ran');
is($b->{first_page}, 10, 'events.html: ten events at first');
is($b->{first_count}, '10+ upcoming events.', 'said so');
ok($b->{more_visible}, '"More events" is offered');
is_deeply($b->{all}, ['Data Workshop', 'Rust Meetup Berlin', $title, 'Rust Conference',
                      'Webinar on Testing', 'Go Hackathon', map { "Community call $_" } 1 .. 6],
          'then all twelve, soonest first, without drafts or past events');
is($b->{all_count}, '12 upcoming events.', 'counted');
is_deeply($b->{hackathons}, [$title, 'Go Hackathon'], 'the type filter');
is($b->{type_count}, '2 upcoming events: Hackathon.', 'said so');
is($b->{range_error}, 'The end date is before the start date.',
   'an end date before the start date: a sentence at the field');
is_deeply($b->{after_12th}, ['Rust Conference'],
          'title search from the 12th: the hackathon ended the 11th');
is_deeply($b->{search}, [$title, 'Rust Conference'], 'from the 10th: both');
is($b->{search_count},
   "2 upcoming events: title contains \x{201c}rust\x{201d}, 2031-03-10 to 2031-03-31.",
   'the search in words');
is($b->{search_url}, '?q=rust&from=2031-03-10&to=2031-03-31',
   'and in the address');
is($b->{back_from}, '2031-03-12', 'the back button returns to the previous search');
is($b->{none}, 'No upcoming events match your search.', 'nothing found: a sentence');

is($b->{event_title}, $title, 'event.html: the title');
is($b->{page_title}, "$title \x{b7} Platform", 'in the window title too');
is($b->{organisation}, 'Rust Community', 'the organisation');
like($b->{when} // '',
     qr/^Mon, (Mar 10|10 Mar),? 2031,? 10:00(\sAM)? \x{2013} Tue, (Mar 11|11 Mar),? 2031,? (18:00|6:00\sPM)$/,
     'the times in the event\'s zone (Paris)');
like($b->{zone} // '', qr{^Europe/Paris time}, 'the zone named');
is($b->{format}, 'Breakout rooms, teams of 3.', 'the format');
is_deeply($b->{description}, ['Build things with Rust for two days.',
                              'Teams of three; prizes for the best.'],
          'the description in paragraphs');
is_deeply($b->{tickets}, ['Community pass | Free | 50 | On sale.'], 'the tickets');
is_deeply($b->{options}, ['Community pass — Free (50 places left)'],
          'the form offers the ticket');
is_deeply($b->{empty_errors},
          ['Please enter your email address.', 'Please enter your name.',
           'Please accept the terms to register.',
           'Please agree to how your name and email address are used: '
           . 'the organiser needs them to let you in.'],
          'an empty form: a sentence at each field');
is($b->{focused}, 'email', 'the first is focused');
is($b->{bad_email},
   'This does not look like an email address. Check it for typing mistakes.',
   'a malformed address');
is($b->{consent_error},
   'Please agree to how your name and email address are used: the organiser '
   . 'needs them to let you in.', 'the consent box unticked: a sentence there');
is($b->{consent_errors}, 1, 'and only there');
is($b->{consent_message}, 'Please correct the fields marked above.',
   'with a line by the button');

is_deeply(failures($b->{api}{visitor}), ['GET /api/me 401'],
          'browse: only "not signed in" failed')
    or diag(explain($b->{api}));

# ------------------------------------------------------------- register

SKIP: {
skip('conf/api/registration.conf is not there yet', 1) unless $have{registration};

my $r = flow('register');

is_deeply($r->{steps}, ['registered', 'ticket', 'my events', 'again'],
          'register: every step ran');
is($r->{sent}, 'Check your mail: we sent a link to vera@example.org to confirm '
   . 'your registration. It works once, for 15 minutes. You can close this page.',
   'registered: "check your mail"');
ok($r->{form_hidden}, 'the form is gone');
is($r->{mail_template}, 'registration_link', 'the registration mail');
like($r->{link} // '', qr{^\Q$base\E/confirm\.html#token=[A-Za-z0-9_-]{43}$},
     'with a link to confirm.html');
like($r->{landed} // '', qr{^/registration\.html\?id=\d+$},
     'confirmed: registration.html');
is($r->{state}, "Your ticket for \"$title\" is confirmed.", 'says the ticket is confirmed');
is($r->{reg_title}, 'Your ticket', 'headed "Your ticket"');
is($r->{event_link}, $title, 'names the event');
is($r->{ticket_type}, 'Community pass (Free)', 'the ticket type');
is($r->{ticket_name}, 'Vera Visitor', 'the name');
like($r->{code} // '', qr/^[0-9a-f]{32}$/, 'the ticket code');
is($r->{ics}, "/api/tickets/" . ($r->{code} // '') . "/event.ics",
   'a link to the calendar file');
is($r->{ics_status}, 200, 'which loads');
like($r->{ics_type} // '', qr{^text/calendar}, 'as text/calendar');
is($r->{ics_summary}, $title, 'with the event');
is_deeply($r->{my_upcoming}, [$title], 'my-events.html lists the ticket');
is_deeply([@{$r->{my_card} || []}[0, 2, 3, 4]],
          [$title, "Community pass \x{b7} Free \x{b7} by Rust Community",
           "Add to calendar (.ics) \x{b7} Registration \x{b7} Event room",
           'Cancel my ticket'],
          'with its ticket type, organiser and links')
    or diag(explain($r->{my_card}));
ok($r->{my_pending_hidden}, 'nothing in progress');
is($r->{prefilled}, 'vera@example.org', 'signed in, the form is prefilled');
like($r->{again} // '', qr/^You already have a place for "\Q$title\E"\./,
     'a second registration: the API\'s sentence');
is($r->{again_link}, '/my-events.html', 'with a link to my events');
is($r->{places}, '49', 'one place fewer');

is_deeply(failures($r->{api}{visitor}),
          ['GET /api/me 401', "POST /api/events/$event/registrations 409"],
          'register: the only API failure is the one provoked')
    or diag(explain($r->{api}));
}

# ------------------------------------------------------------- teams

SKIP: {
skip('conf/api/teams.conf is not there yet', 1)
    unless $have{registration} && $have{teams};

my $m = flow('teams');

is($m->{sam}, "Your ticket for \"$title\" is confirmed.",
   'a second participant registers the same way');
is_deeply($m->{steps}, ['teams made', 'handed in', 'team link', 'seen', 'cancelled'],
          'teams: every step ran');
is_deeply($m->{registrations},
          ['Vera Visitor | vera@example.org | Community pass (Free) | Ticket issued',
           'Sam Second | sam@example.org | Community pass (Free) | Ticket issued'],
          'the organiser sees the registrations');
is($m->{registrations_summary}, '2 tickets issued, 2 registrations in all.',
   'counted');
is($m->{before_split}, '2 people hold a ticket; no teams yet.', 'no teams yet');
is($m->{split_missing}, 'Please enter how many teams to make (1 to 10000).',
   'the team form needs a number');
is($m->{split}, '2 teams made; every member was emailed the link to their team page.',
   'two teams made');
is_deeply($m->{teams}, ['Team 1 (1 person)', 'Team 2 (1 person)'], 'one person each');
like($m->{moved} // '', qr/^Sam Second is now in Team [12]; we emailed them the link\.$/,
     'Sam moved to Vera\'s team');
my $vt = $m->{visitor_team} // '';
is_deeply($m->{teams_after},
          [map { "Team $_ (" . ($vt eq "Team $_" ? '2 people' : '0 people') . ')' } 1, 2],
          'both in one team now');
like($m->{deadline} // '',
     qr/^Teams can hand in until Tue, (Mar 11|11 Mar),? 2031,? (16:00|4:00\sPM)\.$/,
     'the deadline, in the event\'s zone');
is($m->{no_submissions}, 'No submissions yet.', 'no submissions yet');

is($m->{team_name}, $vt, 'team.html: the team');
is($m->{team_event}, $title, 'of the event');
is_deeply($m->{members}, ['Sam Second', 'Vera Visitor (you)'], 'the members');
like($m->{team_deadline} // '',
     qr/^Your team can hand in and change its work until Tue, (Mar 11|11 Mar),? 2031,? (16:00|4:00\sPM) \(Europe\/Paris time/,
     'the deadline in the event\'s zone');
is_deeply($m->{submission_errors},
          ['Please give your work a title.', 'Please enter the link to your work.'],
          'an empty submission: sentences at the fields');
is($m->{link_error}, 'The link is a web address starting with https://.',
   'not a web link');
like($m->{handed_in} // '', qr/^Handed in: \x{201c}Crab Cam\x{201d}\./, 'handed in');
is($m->{button_after}, 'Save the changes', 'then it can be changed');
like($m->{changed} // '', qr/Crab Cam 2/, 'and is');

is($m->{stranger_text}, 'Sign in with the address you registered with to see '
   . 'your team and hand in your work.', 'not signed in: a sentence');
like($m->{stranger_signin} // '',
     qr{^/signin\.html\?return=%2Fteam\.html%3Fevent%3D\d+$},
     'a way to sign in and come back');
is($m->{stranger_empty}, 'Please enter your email address.',
   'the link form needs an address');
like($m->{stranger_sent} // '',
     qr/^Check your mail: if vera\@example\.org is in a team/,
     'the team link: "check your mail"');
is($m->{team_mail_link}, "$base/team.html?event=$event", 'the mailed team link');

is($m->{submissions}[0], "$vt: Crab Cam 2", 'the organiser sees the submission');
like(join(' ', @{$m->{submissions} || []}),
     qr/A webcam that counts crabs\..*By Sam Second, Vera Visitor\. Last saved by Vera Visitor/,
     'with its description and team');
is($m->{team_card}, 'Handed in: Crab Cam 2', 'and on the team');

like($m->{cancel_confirm} // '', qr/^Press again to cancel your ticket/,
     'cancelling asks again');
like($m->{my_team_link} // '', qr{^/team\.html\?event=\d+$},
     'my events links the ticket to its team page');
like($m->{my_team_text} // '', qr/^Your team: Team \d+$/, 'naming the team');
is($m->{cancelled}, "Your ticket for $title is cancelled.",
   'the free ticket is cancelled');
is($m->{cancelled_card}, 'You cancelled this ticket.', 'the card says so');
is($m->{cancel_buttons}, 0, 'and offers no more cancelling');

is_deeply(failures($m->{api}{organiser}), [],
          'teams: the organiser saw no API failure')
    or diag(explain($m->{api}));
is_deeply(failures($m->{api}{visitor}), [], 'the participant none')
    or diag(explain($m->{api}));
is_deeply(failures($m->{api}{sam}), ['GET /api/me 401'],
          'the second one only "not signed in" at first')
    or diag(explain($m->{api}));
is_deeply(failures($m->{api}{stranger}), ["GET /api/events/$event/team 401"],
          'the stranger only "not signed in"')
    or diag(explain($m->{api}));
}

# ------------------------------------------------------------- paid

SKIP: {
skip('paid tickets need conf/api/registration.conf and python3-aiosmtpd', 1)
    unless $paid;

my $p = flow('paid');

is_deeply($p->{steps}, ['organiser', 'paid', 'listed', 'cancelled'],
          'paid: every step ran');
is($p->{price_error}, 'The price is an amount like 25 or 25.50 (EUR); 0 for free.',
   'a price with three decimals: a sentence at the field');
like($p->{tt_added} // '', qr/^Supporter is added \(\x{20ac}25\.50, 10 places\)\.$/,
     'a paid ticket type: the price in major units');
is($t->psql("SELECT price_minor, currency FROM app.ticket_types WHERE event_id = "
            . ($p->{event} // 0)), '2550|EUR', 'stored in minor units');
is($p->{stripe_needed}, 'Paid tickets need a connected Stripe account. Set the Stripe account.',
   'publishing paid tickets without a Stripe account: a sentence and a link');
is($p->{account_error},
   'A Stripe account id starts with acct_ followed by letters and digits.',
   'a malformed account id: a sentence at the field');
is($p->{account_saved}, 'Saved: paid tickets are paid to acct_1TestOrganiser.',
   'the account is saved');
is($p->{published}, 'Published: the event is listed for everyone.', 'then published');

is($p->{price}, "\x{20ac}25.50", 'the event page shows the price');
like($p->{pay_url} // '', qr{^\Q@{[ $stripe ? $stripe->url : '' ]}\E/pay/cs_},
     'registration.html went on to the payment page');
is($p->{amount}, '25.50 EUR', 'for the price');
like($p->{left} // '',
     qr/^You left the payment page before paying\. Your place is held until .+ \(Europe\/London\)\.$/,
     '"Back" there: registration.html says the place is held');
like($p->{pay_button} // '', qr/^Pay \x{20ac}25\.50$/, 'and offers to pay');
is($p->{state}, 'Your ticket for "Paid Workshop" is confirmed.', 'paid: the ticket');
is($p->{ticket_type}, "Supporter (\x{20ac}25.50)", 'of the paid type');
like($p->{code} // '', qr/^[0-9a-f]{32}$/, 'with its code');
ok((grep { /^(Your place is held\. Preparing the payment|Taking you to the payment page)/ }
    @{$p->{states} || []}), 'on the way, registration.html said it was preparing the payment')
    or diag(explain($p->{states}));
is(($p->{states} || [])->[-1], 'Your ticket for "Paid Workshop" is confirmed.',
   'and last, the ticket');
is($p->{my_card}[0], 'Paid Workshop', 'my-events.html lists it');
is($p->{my_buttons}, 0, 'with no cancel button (paid tickets are refunded by the organiser)');
is_deeply($p->{registrations},
          ["Bea Buyer | bea\@example.org | Supporter (\x{20ac}25.50) | Ticket issued"],
          'the organiser sees it issued');

is($p->{cancel_confirm}, 'Press again to confirm. This cannot be undone.',
   'cancelling the event asks again');
is($p->{event_cancelled},
   'The event is cancelled: 1 ticket cancelled and their holders emailed, 1 payment refunded.',
   'the event is cancelled, the payment refunded');
is($p->{status_after}, 'Cancelled', 'its status says so');
ok($p->{editor_disabled}, 'the editor is closed');
is_deeply($p->{registrations_after}, ['Cancelled'], 'the registration is cancelled');
is($p->{closed}, 'This event was cancelled: registration is closed.',
   'the event page says so');
ok($p->{form_hidden}, 'without the form');
is($p->{my_cancelled}, 'The event was cancelled.', 'and my events');
ok(wait_for(10, sub { grep { ($_->{path} // q()) eq q(/v1/refunds) } $stripe->requests }),
   'the refund reached the Stripe-format server');

is_deeply(failures($p->{api}{organiser}),
          ['POST /api/orgs/' . ($org // '') . '/events/' . ($p->{event} // '')
           . '/publish 400'],
          'paid: the organiser saw only the publish refusal')
    or diag(explain($p->{api}));
is_deeply(failures($p->{api}{buyer}), ['GET /api/me 401', 'GET /api/me 401'],
          'the buyer only "not signed in" on the event page')
    or diag(explain($p->{api}));
}

done_testing;
