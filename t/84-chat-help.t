#!/usr/bin/perl

# Event chat, continued (issue 5; ngx_platform_chat.c, sql/014_chat_more.sql,
# docs/chat.md) with raw WebSocket clients and two workers: the presence
# list (welcome "present", notices only for a user's first and last
# socket, ?room= on the REST presence), the rate limit per user shared by
# a user's sockets, and help requests: participant -> admin room, the
# admin room's welcome, clearing from the admin room and over REST, the
# participant told, the REST list, non-organisers refused.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Platform;
use Test::Platform::WebSocket;

my $t = Test::Platform->new(workers => 2);
my $dir = $t->testdir;

$t->key_file;

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_chat_zone chat 4m messages=200 room_size=512k flush=50ms batch=100;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $t->api_conf(qw(auth)) ]}

        location ~ ^/ws/events/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=chat;
            platform_chat_rate 5r/s burst=6;
            add_header X-Worker \$pid always;
        }

        location ~ ^/api/events/(\\d+)/chat/presence\$ {
            platform_auth any;
            platform_chat_presence event=\$1;
        }

        location ~ ^/api/events/(\\d+)/help\$ {
            platform_auth any;
            platform_query GET api.chat_help_list(\$platform_user::bigint,
                \$1::bigint, \$arg_all::boolean);
        }

        location ~ ^/api/events/(\\d+)/help/(\\d+)/clear\$ {
            platform_auth any;
            platform_chat_help_clear event=\$1 request=\$2;
        }

        location = /status {
            platform_status;
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->utf8->canonical;
my $port = $t->port;
my $origin = "http://127.0.0.1:$port";

# ------------------------------------------------------------------ helpers

our $ev;

sub next_json {
    my ($ws, $timeout) = @_;
    while (my $f = $ws->read_frame($timeout // 5)) {
        next if $f->{opcode} == 9 || $f->{opcode} == 10;
        return { type => 'close', code => $f->{code} } if $f->{opcode} == 8;
        return $json->decode($f->{payload});
    }
    return undef;
}

# frames of a type (and matching sub) until n arrived
sub collect {
    my ($ws, $type, $n, $timeout, $match) = @_;
    my @got;
    my $deadline = time + ($timeout // 10);
    while (@got < $n && time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        push @got, $m if $m->{type} eq $type && (!$match || $match->($m));
    }
    return @got;
}

sub none_of {
    my ($ws, $type, $timeout) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        return 0 if $m->{type} eq $type;
    }
    return 1;
}

sub join_room {
    my ($cookie, $room) = @_;
    my $ws = Test::Platform::WebSocket->connect(
        port => $port, path => "/ws/events/$ev" . ($room ? "?room=$room" : ''),
        headers => { $cookie ? (Cookie => "platform_session=$cookie") : () });
    $ws->{welcome} = next_json($ws) if $ws->{status} == 101;
    return $ws;
}

sub send_json { my ($ws, %m) = @_; $ws->text($json->encode(\%m)) }

sub api {
    my ($method, $path, $cookie) = @_;
    my $r = $t->req($method, $path,
                    headers => { Cookie => "platform_session=$cookie",
                                 Origin => $origin },
                    $method eq 'POST' ? (body => '{}') : ());
    return ($r->{status}, eval { $json->decode($r->{content}) } // {});
}

# ------------------------------------------------------------------ set-up

my %cookie;
$cookie{$_} = $t->sign_in("$_\@example.org") for qw(org p1 p2 p3);

$ev = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Help Night', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', o.id FROM auth.users u, o
           WHERE u.email = 'org@example.org'),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email IN ('p1@example.org', 'p2@example.org',
                              'p3@example.org'))
SELECT e.id FROM e;
SQL
ok($ev, "an event ($ev)");

$t->psql(<<"SQL");
UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1));
INSERT INTO app.teams (event_id, number, name) VALUES ($ev, 1, 'Team 1');
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT t.id, $ev, u.id FROM app.teams t, auth.users u
WHERE t.event_id = $ev AND u.email = 'p1\@example.org';
SQL
my ($t1) = $t->psql("SELECT id FROM app.teams WHERE event_id = $ev");
my %uid = map { $_ => $t->psql("SELECT id FROM auth.users WHERE email = "
                               . "'$_\@example.org'") } qw(org p1 p2 p3);

# ------------------------------------------------------------------ presence list

{
    my $w1 = join_room($cookie{p1}, 'main');
    is($w1->{status}, 101, 'p1 in main');
    is_deeply([map { $_->{id} } @{$w1->{welcome}{present} || []}], [$uid{p1}],
              'welcome: present lists p1 alone');
    is($w1->{welcome}{users}, 1, 'welcome: users 1');

    # more sockets until both workers are used (reuseport spreads them)
    my (@b, %pids);
    $pids{$w1->{headers}{'x-worker'}}++;
    for (1 .. 12) {
        my $w = join_room($cookie{p2}, 'main');
        push @b, $w;
        $pids{$w->{headers}{'x-worker'}}++;
        last if @b >= 2 && keys %pids >= 2;
    }
    my @j = collect($w1, 'presence', 1, 5);
    is($j[0] && $j[0]{joined}{id}, $uid{p2}, 'p2 joined: one notice');
    is($j[0] && $j[0]{users}, 2, 'notice: users 2');
    is($j[0] && $j[0]{count}, 2, 'notice: count 2 (connections)');
    ok(none_of($w1, 'presence', 0.5),
       'p2\'s other sockets: no more notices (' . scalar(@b) . ' sockets, '
       . scalar(keys %pids) . ' workers)');

    my $c = join_room($cookie{p3}, 'main');
    is_deeply([sort { $a <=> $b } map { $_->{id} } @{$c->{welcome}{present}}],
              [sort { $a <=> $b } @uid{qw(p1 p2 p3)}],
              'welcome: present lists p1, p2, p3 once each');
    is($c->{welcome}{users}, 3, 'welcome: users 3');
    is($c->{welcome}{count}, 2 + @b, 'welcome: count ' . (2 + @b)
       . ' connections');
    ok(!$c->{welcome}{present_truncated}, 'not truncated');
    my ($p) = grep { $_->{id} == $uid{p2} } @{$c->{welcome}{present}};
    is($p && $p->{name}, 'P2', 'with the name');
    ok($p && exists $p->{avatar}, 'and avatar');

    my ($st, $body) = api('GET', "/api/events/$ev/chat/presence?room=main",
                          $cookie{org});
    is($st, 200, 'REST presence ?room=main: 200');
    my ($main) = grep { $_->{room} eq 'main' } @{$body->{rooms} || []};
    is($main && $main->{user_count}, 3, 'user_count 3');
    is_deeply([sort { $a <=> $b } map { $_->{id} } @{$main->{users} || []}],
              [sort { $a <=> $b } @uid{qw(p1 p2 p3)}], 'users listed');
    ($st, $body) = api('GET', "/api/events/$ev/chat/presence", $cookie{org});
    ($main) = grep { $_->{room} eq 'main' } @{$body->{rooms} || []};
    ok($main && !exists $main->{users}, 'without ?room=: counts only');

    collect($w1, 'presence', 10, 0.5);
    my $last = pop @b;
    $_->close_frame(1000, '') for @b;
    ok(none_of($w1, 'presence', 1), 'p2 closes all but one socket: no notice');
    $last->close_frame(1000, '');
    my ($l) = collect($w1, 'presence', 1, 5);
    is($l && $l->{left}{id}, $uid{p2}, 'the last one: p2 left');
    is($l && $l->{users}, 2, 'users 2');

    $c->close_frame(1000, '');
    $w1->close_frame(1000, '');
}

# ------------------------------------------------------------------ rate per user

{
    # two sockets of one user, on both workers when possible
    my @s;
    my %pids;
    for (1 .. 12) {
        my $w = join_room($cookie{p3}, 'main');
        push @s, $w;
        $pids{$w->{headers}{'x-worker'}}++;
        last if @s >= 2 && keys %pids >= 2;
    }
    @s = @s[0, -1];
    collect($_, 'x', 1, 0.3) for @s;

    # 5r/s burst=6: about 7 pass at once, whichever socket they come from
    for my $n (1 .. 8) {
        send_json($_, type => 'message', text => "r$n") for @s;
    }
    my $limited = 0;
    for my $w (@s) {
        my $deadline = time + 2;
        while (time < $deadline) {
            my $f = next_json($w, $deadline - time) // last;
            $limited++ if $f->{type} eq 'error' && $f->{code} eq 'rate_limited';
        }
    }
    my $stored = 0;
    my $deadline = time + 5;
    while (time < $deadline) {
        sleep 0.3;
        $stored = $t->psql("SELECT count(*) FROM app.chat_messages "
                           . "WHERE event_id = $ev AND text ~ '^r[0-9]'");
        last if $stored + $limited >= 16;
    }
    ok($stored >= 6 && $stored <= 9,
       "16 messages from two sockets of one user: $stored pass "
       . '(one bucket: 5r/s burst=6, not two)');
    is($stored + $limited, 16, "the other $limited: rate_limited error frames");

    # another user is not limited by p3's bucket
    my $o = join_room($cookie{p1}, 'main');
    send_json($o, type => 'message', text => 'other user');
    my ($m) = collect($o, 'message', 1, 5, sub { $_[0]{text} eq 'other user' });
    ok($m, 'another user sends meanwhile');
    $_->close_frame(1000, '') for @s, $o;
}

# ------------------------------------------------------------------ help

{
    my $admin = join_room($cookie{org}, 'admin');
    is($admin->{status}, 101, 'organiser in the admin room');
    is_deeply($admin->{welcome}{help}, [], 'welcome: help, none open');

    my $p1 = join_room($cookie{p1}, 'team');
    is($p1->{status}, 101, 'p1 in the team room');
    send_json($p1, type => 'help', text => 'Our build is broken');
    my ($ack) = collect($p1, 'help_ack', 1, 5);
    ok($ack && $ack->{id} > 0, 'help_ack with the id');
    my ($h) = collect($admin, 'help', 1, 5);
    is($h && $h->{request}{id}, $ack->{id}, 'the admin room gets it');
    is($h && $h->{request}{user}{id}, $uid{p1}, 'who');
    is($h && $h->{request}{user}{name}, 'P1', 'name');
    is($h && $h->{request}{team_id}, $t1, 'team_id');
    is($h && $h->{request}{room}, "team:$t1", 'room');
    is($h && $h->{request}{text}, 'Our build is broken', 'text');
    like($h && $h->{request}{time}, qr/^\d{4}-\d\d-\d\dT/, 'time');

    # a second press updates the same open request
    send_json($p1, type => 'help', text => 'Still broken');
    my ($ack2) = collect($p1, 'help_ack', 1, 5);
    is($ack2 && $ack2->{id}, $ack->{id}, 'a second press: the same id');
    ($h) = collect($admin, 'help', 1, 5);
    is($h && $h->{request}{text}, 'Still broken', 'the admin room sees the update');

    # p2 in main, without a note
    my $p2 = join_room($cookie{p2}, 'main');
    send_json($p2, type => 'help');
    my ($ack3) = collect($p2, 'help_ack', 1, 5);
    ($h) = collect($admin, 'help', 1, 5);
    ok($h && !defined $h->{request}{team_id} && $h->{request}{room} eq 'main',
       'from main, no team: team_id null, room main');

    # a second organiser joining now sees both, oldest first
    my $admin2 = join_room($cookie{org}, 'admin');
    is_deeply([map { $_->{id} } @{$admin2->{welcome}{help} || []}],
              [$ack->{id}, $ack3->{id}], 'admin welcome: open requests, oldest first');

    # errors
    send_json($p1, type => 'help', text => 5);
    my ($e) = collect($p1, 'error', 1, 5);
    is($e && $e->{code}, 'bad_request', 'help text not a string: bad_request');
    send_json($p1, type => 'help_clear', id => $ack->{id});
    ($e) = collect($p1, 'error', 1, 5);
    is($e && $e->{code}, 'forbidden', 'help_clear outside the admin room: forbidden');
    send_json($admin, type => 'help', text => 'x');
    ($e) = collect($admin, 'error', 1, 5);
    is($e && $e->{code}, 'bad_request', 'help from the admin room: bad_request');
    send_json($admin, type => 'help_clear', id => 999999999);
    ($e) = collect($admin, 'error', 1, 5);
    is($e && $e->{code}, 'not_found', 'help_clear of no request: not_found');

    # REST list
    my ($st, $b) = api('GET', "/api/events/$ev/help", $cookie{org});
    is($st, 200, 'GET help: 200 for the organiser');
    is_deeply([map { $_->{id} } @{$b->{requests} || []}],
              [$ack->{id}, $ack3->{id}], 'the open requests');
    ($st) = api('GET', "/api/events/$ev/help", $cookie{p1});
    is($st, 403, 'GET help: 403 for a participant');
    ($st) = api('POST', "/api/events/$ev/help/$ack->{id}/clear", $cookie{p1});
    is($st, 403, 'POST clear: 403 for a participant');

    # clear from the admin room
    send_json($admin, type => 'help_clear', id => $ack->{id});
    my ($c1) = collect($admin2, 'help_cleared', 1, 5);
    is($c1 && $c1->{id}, $ack->{id}, 'help_cleared to the admin room');
    is($c1 && $c1->{by}{id}, $uid{org}, 'by the organiser');
    my ($c2) = collect($p1, 'help_cleared', 1, 5);
    is($c2 && $c2->{id}, $ack->{id}, 'and to the participant\'s connection');
    ok(none_of($p2, 'help_cleared', 0.5), 'not to others');

    # clear over REST
    ($st, $b) = api('POST', "/api/events/$ev/help/$ack3->{id}/clear",
                    $cookie{org});
    is($st, 200, 'POST clear: 200');
    is($b->{id}, $ack3->{id}, 'the request cleared');
    ($c1) = collect($admin, 'help_cleared', 1, 5,
                    sub { $_[0]{id} == $ack3->{id} });
    ok($c1, 'REST clear: the admin room is told');
    ($c2) = collect($p2, 'help_cleared', 1, 5);
    is($c2 && $c2->{id}, $ack3->{id}, 'and the participant');
    ($st) = api('POST', "/api/events/$ev/help/0/clear", $cookie{org});
    is($st, 404, 'POST clear of no request: 404');

    ($st, $b) = api('GET', "/api/events/$ev/help", $cookie{org});
    is_deeply($b->{requests}, [], 'none open');
    ($st, $b) = api('GET', "/api/events/$ev/help?all=1", $cookie{org});
    is(scalar @{$b->{requests} || []}, 2, '?all=1: both, cleared');
    ok($b->{requests}[0]{cleared_at}, 'with cleared_at');

    # a connection that closes while its help query is in flight
    my @quick;
    for (1 .. 5) {
        my $q = join_room($cookie{p3}, 'main');
        send_json($q, type => 'help', text => "quick $_");
        $q->close_socket;
    }
    sleep 0.5;
    my $r = $t->get('/status');
    is($r->{status}, 200, 'closed during the query: nginx fine');
    # (a press whose query was still queued is dropped with its
    # connection; one already sent may be stored, but not announced)
    collect($admin, 'help', 10, 0.5);
    my $p3 = join_room($cookie{p3}, 'main');
    send_json($p3, type => 'help', text => 'steady');
    my ($x) = collect($admin, 'help', 1, 5,
                      sub { $_[0]{request}{text} eq 'steady' });
    is($x && $x->{request}{user}{id}, $uid{p3}, 'a press after that: announced');
    $p3->close_frame(1000, '');

    $_->close_frame(1000, '') for $admin, $admin2, $p1, $p2;
}

done_testing();
