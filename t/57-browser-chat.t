#!/usr/bin/perl

# The event room page (html/room.html, html/js/chat.js, room.js) in
# headless Chromium: two ticket holders, each in a browser context of their
# own, chat with each other over the chat WebSocket (conf/api/chat.conf,
# two workers); presence count, history after a reload of the page,
# reconnecting by itself when nginx reloads (1001), an error frame shown;
# the organisers' view: the rooms' live counts, the admin room's chat
# (t/browser/chat-two.mjs does it, this file judges it).

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
$t->psql("UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1))");
ok($ev, "an event ($ev) and two ticket holders, Ana and Ben");

my $base = 'http://127.0.0.1:' . $t->port;
my $master = $t->nginx_pid;
my $res = `node '$dir/chat-two.mjs' '$base' '$ev' '$cookie{ana}' '$cookie{ben}' '$cookie{olga}' '$master' 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $r = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'chat-two.mjs finished') or diag($res);
ok($r, 'chat-two.mjs reported') or diag($res);
$r ||= {};
is_deeply($r->{errors}, [], 'no script errors or failed loads') or diag(explain($r->{errors}));
is_deeply($r->{steps}, ['both in', 'chatted', 'history', 'reconnected', 'error frame',
                          'organiser'],
          'every step ran');

is($r->{video}, 'Live stream', 'a place for the video player');
is($r->{tabs}[0], 'Main room', 'the main room tab');
is($r->{count_a}, '2 people here', 'presence: A sees two people');
is($r->{count_b}, '2 people here', 'presence: B sees two people');
is($r->{b_saw}, 'Hello from A', "B sees A's message");
is($r->{b_sender}, 'Ana', 'with the sender\'s name');
is($r->{a_saw}, 'Hi A, B here', "A sees B's message");
is($r->{markup}, '<img src=x onerror="window.__xss=1"> & <b>bold</b>',
   'markup is shown as text');
is($r->{markup_elements}, 0, 'no elements made from it');
is($r->{xss}, undef, 'and no script ran');
is_deeply($r->{history}, ['Hello from A', 'Hi A, B here',
                          '<img src=x onerror="window.__xss=1"> & <b>bold</b>'],
          'after a reload of the page: the history');
is($r->{count_after_reload}, '2 people here', 'still two people');
like($r->{reconnect_status} // '', qr/Reconnecting|restarted/,
     'nginx reloads: the page says it reconnects');
is($r->{after_reload}, 'After the reload', 'and chats again after reconnecting');
is($r->{duplicates}, 0, 'no message shown twice');
is($r->{rate_error}, 'You are sending messages too fast. Please wait a moment.',
   'over the rate limit: the error frame is shown');

is_deeply($r->{org_rooms}, ['Main room | 2', 'Organisers | 1'],
          'the organiser sees the live rooms and their counts')
    or diag(explain($r->{org_rooms}));
is($r->{org_join}, "/room.html?event=$ev&room=main", 'with a link to join');
like($r->{org_help} // '', qr/^(Nobody is asking for help\.|Help requests are not available)/,
     'the help requests\' place');
is($r->{org_saw}, 'Organisers only', 'the admin room chat');
is($r->{org_count}, '1 person here', 'one organiser in it');

is($t->psql("SELECT count(*) FROM app.chat_messages WHERE event_id = $ev "
            . "AND text IN ('Hello from A', 'Hi A, B here', 'After the reload')"),
   3, 'the messages are stored');

done_testing();
