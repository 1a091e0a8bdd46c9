#!/usr/bin/perl

# Breakout teams and team submissions (issue 4, sql/009_teams.sql,
# conf/api/teams.conf) over HTTP with real mail: an organiser splits the
# participants into teams and every one of them receives the team link at
# the SMTP sink; the link again by address (the same answer for strangers,
# rate limited); moves; the team page and the team's submission until the
# deadline; the organiser's list; splitting again; and a tenant-isolation
# matrix (another organiser gets 404 on every endpoint of this event,
# another event's participant cannot touch this event's teams).
#
# Tickets are inserted with psql: the registration flow (008) is tested on
# its own.

use strict;
use warnings;
use utf8;

use Encode qw(decode encode);
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Test::More;
use Test::Platform qw(field_of);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;    # session.key in the test directory

my $smtp = $t->smtp_sink;
my $SP = $smtp->port;

# Three team links per address and window (sign-in needs one per address).
$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@example.org;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth events teams), { links_per_email => 3 }) ]}
    }
EOF

$t->run;

my $port = $t->port;
my $origin = "http://127.0.0.1:$port";
my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h;
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin unless $o{no_origin};
    }
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub post { my ($p, $b, %o) = @_; req('POST', $p, $b, %o) }
sub put  { my ($p, $b, %o) = @_; req('PUT', $p, $b, %o) }
sub get  { my ($p, %o) = @_; req('GET', $p, undef, %o) }

sub parse_mail {
    my ($raw) = @_;

    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head =~ s/\r\n[ \t]+/ /g;

    my %h;
    for (split /\r\n/, $head) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }

    my %parts;
    if (($h{'content-type'} // '') =~ /boundary="([^"]+)"/) {
        my $b = $1;
        for my $part (split /\r\n--\Q$b\E(?:--)?\r\n/, "\r\n$body") {
            my ($ph, $pb) = split /\r\n\r\n/, $part, 2;
            next unless defined $pb && $ph =~ m{Content-Type: (text/\w+)};
            $parts{$1} = decode('UTF-8', decode_base64($pb));
        }
    } else {
        $parts{'text/plain'} = decode('UTF-8', decode_base64($body));
    }

    return { header => \%h, text => $parts{'text/plain'} // '',
             html => $parts{'text/html'} // '' };
}

# The team mails received so far: [{to, subject, text, html}], in order.
sub team_mails {
    # (the sink writes a message before its envelope: read them in that
    # order, and leave a message whose envelope is not there yet for the
    # next look)
    my @msg = $smtp->messages;
    my @env = $smtp->envelopes;
    my @out;
    for my $i (0 .. $#msg) {
        last unless $env[$i];
        my $m = parse_mail($msg[$i]);
        next unless ($m->{header}{subject} // '') =~ /^Your team for /;
        push @out, { to => join(',', @{$env[$i]{rcpt_tos}}),
                     subject => $m->{header}{subject},
                     text => $m->{text}, html => $m->{html} };
    }
    return @out;
}

# Waits until the sink holds N team mails (and the queue is empty).
sub wait_team_mails {
    my ($n) = @_;
    for (1 .. 150) {
        my @m = team_mails();
        return @m if @m >= $n;
        select(undef, undef, undef, 0.1);
    }
    diag($t->psql("SELECT string_agg(state || ' ' || coalesce(last_error, ''), "
                  . "E'\\n') FROM jobs.jobs WHERE state <> 'done'"));
    return team_mails();
}

sub user_id {
    my ($email) = @_;
    return $t->psql('SELECT id FROM auth.users WHERE email = '
                    . $t->sql_quote($email));
}

# A valid ticket for EMAIL (account made if needed) through an issued
# registration under NAME, as 008's flow leaves it.
sub give_ticket {
    my ($ev, $email, $name) = @_;
    my ($e, $n) = map { $t->sql_quote($_) } $email, $name;
    return $t->psql(encode('UTF-8', <<"SQL"));
INSERT INTO auth.users (email) VALUES ($e) ON CONFLICT DO NOTHING;
WITH u AS (SELECT id FROM auth.users WHERE email = $e),
     tt AS (SELECT id FROM app.ticket_types WHERE event_id = $ev
            ORDER BY id LIMIT 1),
     r AS (INSERT INTO app.registrations (event_id, ticket_type_id, email,
                                          name, user_id, status,
                                          terms_version, consent_version)
           SELECT $ev, tt.id, $e, $n, u.id, 'issued', 'terms-1', 'terms-1'
           FROM u, tt
           RETURNING id, user_id, ticket_type_id)
INSERT INTO app.tickets (event_id, ticket_type_id, user_id, registration_id)
SELECT $ev, r.ticket_type_id, r.user_id, r.id FROM r
RETURNING user_id;
SQL
}

# ------------------------------------------------------------------ set-up

my $ann = $t->sign_in('ann@example.org');     # organiser of Org A
my $bob = $t->sign_in('bob@example.org');     # organiser of Org B

my $r = post('/api/orgs', { name => 'Org A' }, cookie => $ann);
my $org_a = body_of($r)->{id};
$ann = $t->session_cookie($r);
$r = post('/api/orgs', { name => 'Org B' }, cookie => $bob);
my $org_b = body_of($r)->{id};
$bob = $t->session_cookie($r);
ok($org_a && $org_b && $ann && $bob, 'two organisers, two organisations');

my %event = (title => 'Hack <Night>', business_type => 'hackathon',
             starts_at => '2031-03-10T09:00:00Z',
             ends_at => '2031-03-11T17:00:00Z',
             breakouts => JSON::PP::true(), team_size => 2);

$r = post("/api/orgs/$org_a/events", \%event, cookie => $ann);
my $ev = body_of($r)->{id};
post("/api/orgs/$org_a/events/$ev/ticket-types",
     { name => 'Seat', quantity => 100 }, cookie => $ann);
$r = post("/api/orgs/$org_b/events", { %event, title => 'Bob Jam' },
          cookie => $bob);
my $ev_b = body_of($r)->{id};
post("/api/orgs/$org_b/events/$ev_b/ticket-types",
     { name => 'Seat', quantity => 100 }, cookie => $bob);
ok($ev && $ev_b, 'an event in each organisation, with a ticket type');

my $base = "/api/orgs/$org_a/events/$ev";

# Five participants of Org A's event, one of Org B's; all signed in before
# any team mail exists (sign_in reads the newest mailed link).
my %names = (p1 => 'Alice', p2 => 'Bruno', p3 => 'Chloé',
             p4 => 'Dmitri', p5 => 'Eve', q1 => 'Quentin');
my (%cookie, %uid);
for my $p (sort keys %names) {
    $cookie{$p} = $t->sign_in("$p\@example.org");
    $uid{$p} = give_ticket($p eq 'q1' ? $ev_b : $ev, "$p\@example.org",
                           $names{$p});
}
is(scalar(grep { $_ } values %uid), 6, 'six participants with tickets');
my @ps = qw(p1 p2 p3 p4 p5);

# ------------------------------------------------------------------ split

is(field_of(post("$base/teams", { by => 'count', value => 0 },
                 cookie => $ann)), '400 value', 'split: value 0 is 400 value');
is(field_of(post("$base/teams", { by => 'count', value => 10001 },
                 cookie => $ann)), '400 value', 'split: value over 10000');
is(field_of(post("$base/teams", { by => 'pairs', value => 2 },
                 cookie => $ann)), '400 by', 'split: unknown "by"');
is(field_of(post("$base/teams", { by => 'count', value => 2, x => 1 },
                 cookie => $ann)), '400 x', 'split: unknown field');
is(field_of(post("$base/teams", 'not json', cookie => $ann)), '400 -',
   'split: a body that is not JSON is 400');

$r = post("$base/teams", { by => 'count', value => 2 }, cookie => $ann);
is($r->{status}, 201, 'split by count 2: 201');
my $split = body_of($r);
is_deeply([map { $_->{size} } @{$split->{teams}}], [3, 2],
          'five people in two teams: 3 and 2');
is_deeply([map { $_->{name} } @{$split->{teams}}], ['Team 1', 'Team 2'],
          'named Team 1 and Team 2');
is_deeply([sort map { $_->{email} } map { @{$_->{members}} }
           @{$split->{teams}}],
          [map { "$_\@example.org" } @ps], 'every participant placed');
is_deeply($split->{unassigned}, [], 'nobody left out');

my %team_of;     # participant -> team
for my $team (@{$split->{teams}}) {
    for my $m (@{$team->{members}}) {
        my ($p) = $m->{email} =~ /^(p\d)\@/;
        $team_of{$p} = $team;
    }
}

my @mails = wait_team_mails(5);
is(scalar @mails, 5, 'five team mails arrive at the SMTP sink');
is_deeply([sort map { $_->{to} } @mails], [map { "$_\@example.org" } @ps],
          'one to each participant');

for my $p (@ps) {
    my ($m) = grep { $_->{to} eq "$p\@example.org" } @mails or next;
    my $team = $team_of{$p}{name};
    is($m->{subject}, "Your team for Hack <Night>: $team",
       "$p: the subject names the event and the team");
    like($m->{text}, qr{^\Q$origin\E/team\.html\?event=$ev\r?$}m,
         "$p: the mail carries the team link");
    my @mates = sort map { $_->{name} } grep { $_->{email} ne "$p\@example.org" }
                @{$team_of{$p}{members}};
    like($m->{text}, qr/Your teammates: \Q@{[ join ', ', @mates ]}\E\./,
         "$p: and the teammates' names");
    like($m->{text}, qr/^Hello \Q$names{$p}\E,/, "$p: greeted by name");
}
my ($m3) = grep { $_->{to} eq 'p3@example.org' } @mails;
like($m3->{html} // '', qr{<a href="\Q$origin\E/team\.html\?event=$ev">},
     'the HTML part links to the team page');
like($m3->{html} // '', qr/Hack &lt;Night&gt;/, 'with the title escaped');
my ($mate3) = grep { $_ ne 'p3' && $team_of{$_}{id} == $team_of{p3}{id} } @ps;
my ($mail_mate3) = grep { $_->{to} eq "$mate3\@example.org" } @mails;
like($mail_mate3->{text} // '', qr/Chloé/, 'names in UTF-8 reach the mail');

# ------------------------------------------------------------------ organiser view

$r = get("$base/teams", cookie => $ann);
is($r->{status}, 200, 'teams: 200');
my $teams = body_of($r);
is($teams->{participants}, 5, 'five participants');
is_deeply([sort keys %{$teams->{teams}[0]{members}[0]}],
          ['email', 'name', 'user_id'], 'members with id, name and email');
my ($t1, $t2) = map { $_->{id} } @{$teams->{teams}};

# ------------------------------------------------------------------ link again

my $n_mails = () = team_mails();
$r = post("/api/events/$ev/team-link", { email => 'P3@Example.org' });
is($r->{status}, 202, 'team link again for a participant: 202');
my $known = $r->{content};
$r = post("/api/events/$ev/team-link", { email => 'stranger@example.org' });
is($r->{status}, 202, 'for a stranger: 202 too');
is($r->{content}, $known, 'with the same bytes');
$r = post("/api/events/$ev/team-link", { email => 'q1@example.org' });
is($r->{content}, $known, 'another event\'s participant: the same answer');
is(field_of(post("/api/events/$ev/team-link", { email => 'nope' })),
   '400 email', 'a malformed address is 400 email');
is(field_of(post("/api/events/$ev/team-link", {})), '400 email',
   'no address: 400 email');

@mails = wait_team_mails($n_mails + 1);
is(scalar @mails, $n_mails + 1, 'one more team mail');
is($mails[-1]{to}, 'p3@example.org', 'to the participant who asked');
is($t->psql("SELECT count(*) FROM jobs.jobs "
            . "WHERE payload->>'template' = 'team_assigned' AND payload->>'to' "
            . "IN ('stranger\@example.org', 'q1\@example.org')"), 0,
   'nothing queued for the others');

my @st = map { post("/api/events/$ev/team-link",
                    { email => 'stranger@example.org' })->{status} } 1 .. 3;
is_deeply(\@st, [202, 202, 429],
          'three per address and window, then 429');
$r = post("/api/events/$ev/team-link", { email => 'Stranger@example.org' });
is($r->{status}, 429, 'in any case');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
like(body_of($r)->{error}{message} // '',
     qr/^Too many team links were requested\. Please wait \d+ minutes? and try again\.$/,
     'and a sentence');

# ------------------------------------------------------------------ moves

my $mover = (grep { $team_of{$_}{id} == $t1 } @ps)[0];
$n_mails = () = team_mails();
$r = post("$base/teams/moves", { user_id => $uid{$mover} + 0, team_id => $t2 },
          cookie => $ann);
is($r->{status}, 200, "move $mover to Team 2: 200");
is_deeply(body_of($r), { user_id => $uid{$mover} + 0,
                         team => { id => $t2, number => 2, name => 'Team 2' },
                         moved => JSON::PP::true() }, 'the answer');
@mails = wait_team_mails($n_mails + 1);
is($mails[-1]{to}, "$mover\@example.org", 'the person moved is mailed');
like($mails[-1]{subject}, qr/: Team 2$/, 'with the new team');
is_deeply([map { $_->{size} } @{body_of(get("$base/teams",
                                            cookie => $ann))->{teams}}],
          [2, 3], 'the teams now have 2 and 3 members');

is(field_of(post("$base/teams/moves", { user_id => $uid{q1} + 0,
                                        team_id => $t1 }, cookie => $ann)),
   '400 user_id', 'moving another event\'s participant: 400 user_id');
is(field_of(post("$base/teams/moves", { user_id => $uid{p1} + 0 },
                 cookie => $ann)), '400 team_id', 'no team_id: 400');
is(field_of(post("$base/teams/moves", { user_id => $uid{p1} + 0,
                                        team_id => 'two' }, cookie => $ann)),
   '400 team_id', 'a team_id that is not a number: 400');

# ------------------------------------------------------------------ team page

my $in_t1 = (grep { $_ ne $mover && $team_of{$_}{id} == $t1 } @ps)[0];
my $mate_t1 = (grep { $_ ne $mover && $_ ne $in_t1 && $team_of{$_}{id} == $t1 }
               @ps)[0];

$r = get("/api/events/$ev/team", cookie => $cookie{$in_t1});
is($r->{status}, 200, 'the team page: 200');
my $mine = body_of($r);
is($mine->{team}{name}, 'Team 1', 'the caller\'s team');
is_deeply([sort map { keys %$_ } @{$mine->{team}{members}}],
          ['name', 'name', 'you', 'you'], 'members: names only, no email');
is_deeply([sort map { $_->{name} } grep { $_->{you} } @{$mine->{team}{members}}],
          [$names{$in_t1}], 'the caller is marked');
ok($mine->{editable}, 'editable');
is($mine->{submission}, undef, 'no submission yet');
is($mine->{closes_at}, '2031-03-11T17:00:00+00:00',
   'no deadline: open until the event ends');

is(get("/api/events/$ev/team", cookie => $cookie{q1})->{status}, 404,
   'another event\'s participant: 404');
is(get("/api/events/$ev/team")->{status}, 401, 'without a session: 401');

# ------------------------------------------------------------------ submissions

my $sub = { title => 'Robot', link => 'https://git.example/robot',
            description => 'It walks.' };
for my $case (
    [title => '', 'empty title'],
    [title => 'x' x 201, 'title over 200 characters'],
    [link => 'ftp://git.example/robot', 'link not http(s)'],
    [link => 'https://x.example/' . 'a' x 1990, 'link over 2000 characters'],
    [description => 'd' x 10001, 'description over 10000 characters'],
) {
    my ($f, $v, $why) = @$case;
    is(field_of(put("/api/events/$ev/team/submission", { %$sub, $f => $v },
                    cookie => $cookie{$in_t1})), "400 $f", "submission: $why");
}
is(put("/api/events/$ev/team/submission", $sub, cookie => $cookie{$in_t1},
       no_origin => 1)->{status}, 403, 'without Origin: 403 (CSRF)');

$r = put("/api/events/$ev/team/submission", $sub, cookie => $cookie{$in_t1});
is($r->{status}, 201, 'Team 1 submits: 201');
is(body_of($r)->{submitted_by}, $names{$in_t1}, 'submitted by the caller');

$r = put("/api/events/$ev/team/submission",
         { title => 'Robot 2', link => 'https://git.example/robot2' },
         cookie => $cookie{$mate_t1});
is($r->{status}, 200, 'a teammate edits it: 200');
is(body_of($r)->{title}, 'Robot 2', 'the new title');

$r = put("/api/events/$ev/team/submission",
         { title => 'Team 2 thing', link => 'http://t2.example/' },
         cookie => $cookie{$mover});
is($r->{status}, 201, 'the moved person submits for Team 2');

is(put("/api/events/$ev/team/submission", $sub,
       cookie => $cookie{q1})->{status}, 404,
   'another event\'s participant cannot submit here: 404');

$r = get("$base/submissions", cookie => $ann);
is($r->{status}, 200, 'submissions: 200');
my $subs = body_of($r)->{submissions};
is_deeply([map { "$_->{team}{name}: $_->{title}" } @$subs],
          ['Team 1: Robot 2', 'Team 2: Team 2 thing'],
          'each team\'s submission, Team 2\'s did not touch Team 1\'s');
is_deeply([sort map { $_->{email} } @{$subs->[1]{team}{members}}],
          [sort map { "$_\@example.org" } grep { $_ eq $mover || $team_of{$_}{id} == $t2 } @ps],
          'with the team\'s members');

# ------------------------------------------------------------------ deadline

is(field_of(put("$base/submission-deadline", { deadline => 'soon' },
                cookie => $ann)), '400 deadline', 'deadline: not a time');
is(field_of(put("$base/submission-deadline", {}, cookie => $ann)),
   '400 deadline', 'deadline: missing');

$r = put("$base/submission-deadline",
         { deadline => '2020-01-01T00:00:00Z' }, cookie => $ann);
is($r->{status}, 200, 'deadline set (in the past): 200');
is(body_of($r)->{open}, JSON::PP::false(), 'submissions are closed');

$r = put("/api/events/$ev/team/submission", $sub, cookie => $cookie{$in_t1});
is($r->{status}, 409, 'after the deadline: 409');
is(body_of($r)->{error}{message}, 'The submission deadline has passed.',
   'with a sentence');
is(body_of(get("/api/events/$ev/team", cookie => $cookie{$in_t1}))->{editable},
   JSON::PP::false(), 'the team page says it cannot be edited');

$r = put("$base/submission-deadline",
         { deadline => '2031-03-11T12:00:00Z' }, cookie => $ann);
is(body_of($r)->{submission_deadline}, '2031-03-11T12:00:00+00:00',
   'deadline moved to the last day');
$r = put("/api/events/$ev/team/submission", { %$sub, title => 'Robot 3' },
         cookie => $cookie{$in_t1});
is($r->{status}, 200, 'editable again before the new deadline');
is(body_of(get("/api/events/$ev/team", cookie => $cookie{$in_t1}))
       ->{submission_deadline}, '2031-03-11T12:00:00+00:00',
   'the team page shows the deadline');

# ------------------------------------------------------------------ isolation

my $before = $t->psql("SELECT json_agg(x ORDER BY x.team_id, x.user_id) "
                      . "FROM app.team_members AS x")
             . $t->psql("SELECT json_agg(s ORDER BY s.id) FROM app.submissions AS s")
             . $t->psql("SELECT submission_deadline FROM app.events "
                        . "WHERE id = $ev");

my @endpoints = (
    ['GET', 'teams', undef],
    ['POST', 'teams', { by => 'count', value => 2, force => JSON::PP::true() }],
    ['POST', 'teams/moves', { user_id => $uid{p1} + 0, team_id => undef }],
    ['PUT', 'submission-deadline', { deadline => undef }],
    ['GET', 'submissions', undef],
);
for my $e (@endpoints) {
    my ($m, $path, $body) = @$e;
    is(req($m, "/api/orgs/$org_b/events/$ev/$path", $body,
           cookie => $bob)->{status}, 404,
       "Org B's organiser, $m $path of Org A's event via Org B: 404");
    is(req($m, "/api/orgs/$org_a/events/$ev/$path", $body,
           cookie => $bob)->{status}, 403,
       "Org B's organiser, $m $path via Org A's URL: 403");
    is(req($m, "/api/orgs/$org_a/events/$ev_b/$path", $body,
           cookie => $ann)->{status}, 404,
       "Org A's organiser, $m $path of Org B's event: 404");
    is(req($m, "/api/orgs/$org_a/events/$ev/$path", $body,
           cookie => $cookie{p1})->{status}, 403,
       "a participant, $m $path: 403");
    is(req($m, "/api/orgs/$org_a/events/$ev/$path", $body)->{status}, 401,
       "without a session, $m $path: 401");
}
is(put("/api/events/$ev_b/team/submission", $sub,
       cookie => $cookie{$in_t1})->{status}, 404,
   'a participant of Org A\'s event on Org B\'s event: 404');
is($t->psql("SELECT json_agg(x ORDER BY x.team_id, x.user_id) "
            . "FROM app.team_members AS x")
   . $t->psql("SELECT json_agg(s ORDER BY s.id) FROM app.submissions AS s")
   . $t->psql("SELECT submission_deadline FROM app.events WHERE id = $ev"),
   $before, 'teams, submissions and deadline unchanged');

# ------------------------------------------------------------------ split again

$r = post("$base/teams", { by => 'size' }, cookie => $ann);
is($r->{status}, 409, 'splitting again with submissions: 409');
is(body_of($r)->{error}{message},
   'Teams have already submitted work (Team 1, Team 2): splitting again '
   . 'would delete their submissions.', 'naming the reason');
like(body_of($r)->{error}{hint} // '', qr/"force": true/, 'and the way out');

$n_mails = () = team_mails();
$r = post("$base/teams", { by => 'size', force => JSON::PP::true() },
          cookie => $ann);
is($r->{status}, 201, 'forced, by the event\'s team size (2): 201');
is_deeply([map { $_->{size} } @{body_of($r)->{teams}}], [2, 2, 1],
          'five people in teams of at most 2: 2, 2, 1');
ok(!grep({ $_->{id} == $t1 || $_->{id} == $t2 } @{body_of($r)->{teams}}),
   'new teams replace the old ones');
is_deeply(body_of(get("$base/submissions", cookie => $ann))->{submissions},
          [], 'the old submissions are gone');
is(scalar(() = wait_team_mails($n_mails + 5)), $n_mails + 5,
   'everyone is mailed the new team');

$t->psql("UPDATE app.tickets SET status = 'cancelled' WHERE event_id = $ev");
$r = post("$base/teams", { by => 'count', value => 2 }, cookie => $ann);
is($r->{status}, 409, 'no participants left: 409');
like(body_of($r)->{error}{message}, qr/^Nobody holds a ticket/, 'with a sentence');

done_testing;
