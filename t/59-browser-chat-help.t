#!/usr/bin/perl

# Help requests and the presence list in headless Chromium: two ticket
# holders (Ana, in team "Rockets", and Ben) in html/room.html, an organiser
# in html/organiser/room.html (conf/api/chat.conf, two workers).  The
# presence list names both; Ana asks for help from her team tab; the
# organiser's page shows the flag live, its "Join the team room" link
# opens Ana's team room; clearing it removes the flag and tells Ana
# (t/browser/chat-help.mjs does it, this file judges it).

use strict;
use warnings;
use utf8;

use Test::More;
use Test::Platform qw(browser_dir);
use JSON::PP;

binmode(Test::More->builder->$_, ':utf8') for qw(output failure_output todo_output);

my $t = Test::Platform->new(workers => 2);
my $root = $t->root;
my $dir = browser_dir();
my $tdir = $t->testdir;

$t->key_file;    # session.key in the test directory

my @areas = ('core', 'auth', 'events',
             grep { -f "$root/conf/api/$_.conf" } qw(teams chat));

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $tdir/session.key;
    platform_session_secure off;

    platform_chat_zone chat 4m messages=200 flush=50ms batch=50;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        @{[ $t->api_conf(@areas) ]}
    }
EOF

$t->run;

my %cookie = map { $_ => $t->sign_in("$_\@example.org") } qw(ana ben olga);

my $ev = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id, status)
           SELECT 'Chat Night', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id, 'published' FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email IN ('ana@example.org', 'ben@example.org')),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', o.id FROM auth.users u, o
           WHERE u.email = 'olga@example.org')
SELECT e.id FROM e;
SQL
$t->psql(<<"SQL");
INSERT INTO app.teams (event_id, number, name) VALUES ($ev, 1, 'Rockets');
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT t.id, $ev, u.id FROM app.teams t, auth.users u
WHERE t.event_id = $ev AND u.email = 'ana\@example.org';
SQL
my $team = $t->psql("SELECT id FROM app.teams WHERE event_id = $ev");
$t->psql("UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1))");
ok($ev, "an event ($ev) and two ticket holders, Ana (team $team) and Ben");

my $base = 'http://127.0.0.1:' . $t->port;
my $res = `node '$dir/chat-help.mjs' '$base' '$ev' '$cookie{ana}' '$cookie{ben}' '$cookie{olga}' 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $r = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'chat-help.mjs finished') or diag($res);
ok($r, 'chat-help.mjs reported') or diag($res);
$r ||= {};
is_deeply($r->{errors}, [], 'no script errors or failed loads') or diag(explain($r->{errors}));
is_deeply($r->{steps}, ['presence list', 'organiser in', 'asked', 'flag shown',
                          'joined the team room', 'cleared', 'reloaded'],
          'every step ran');

my $note = 'Our build is <b>broken</b> & stuck';

is_deeply($r->{present_a}, ['Ana (you)', 'Ben'], 'Ana\'s page lists both, herself marked');
is_deeply($r->{present_b}, ['Ana', 'Ben (you)'], 'so does Ben\'s');
is($r->{help_empty}, 'Nobody is asking for help.', 'the organiser: nobody asks yet');

is($r->{team_tab}, 'Team: Rockets', 'Ana has a team tab');
is($r->{help_ack}, 'An organiser has been told and will be with you soon.',
   'Ana asks for help: the page says an organiser was told');

is($r->{flags}, 1, 'the organiser\'s page shows one help flag');
is($r->{flag_name}, 'Ana', 'with the participant\'s name');
is($r->{flag_text}, $note, 'and the note, as text');
is($r->{flag_elements}, 0, 'no elements made from the note');
ok($r->{help_empty_hidden}, '"nobody" is gone');
ok($r->{not_reloaded}, 'without reloading the page');
is($r->{join_href}, "/room.html?event=$ev&room=team:$team", 'a link to the team room');

is($r->{tab_url}, "?event=$ev&room=team:$team", 'the link opens the team room');
is($r->{tab_selected}, 'true', 'on the team tab');
is_deeply($r->{tab_present}, ['Ana', 'Olga (you)'], 'Ana is there');
is($r->{a_saw}, 'An organiser is here', 'and sees what the organiser writes');

is($r->{flags_after}, 0, 'cleared: the flag is gone from the organiser\'s page');
is($r->{cleared_message}, "Ana's request was cleared by Olga.", 'which says so');
is($r->{a_handled}, 'An organiser has handled your request.',
   'Ana\'s page says it was handled');
is($r->{help_empty_after_reload}, 'Nobody is asking for help.',
   'after a reload of the organiser\'s page: nothing open');

is($t->psql("SELECT text || ' | ' || (cleared_by IS NOT NULL) || ' | ' || team_id "
            . "FROM app.help_requests WHERE event_id = $ev"),
   "$note | true | $team", 'the request is stored, cleared, with the team');

done_testing();
