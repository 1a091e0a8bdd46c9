#!/usr/bin/perl

# Event chat engagement (issue 5 item 7; ngx_platform_chat.c,
# sql/014_chat_more.sql, docs/chat.md): connections opened and closed,
# heartbeats (platform_chat_heartbeat 1s here) and messages counted per
# participant, all written in batches; the organisers' report over REST;
# connections open at a reload get closed_at from the exiting worker.

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

    platform_chat_zone chat 4m flush=50ms batch=100;
    platform_chat_heartbeat 1s;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $t->api_conf(qw(auth)) ]}

        location ~ ^/ws/events/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=chat;
            platform_chat_rate off;
            platform_websocket_shutdown_timeout 1s;
        }

        location ~ ^/api/events/(\\d+)/engagement\$ {
            platform_auth any;
            platform_query GET api.event_engagement(\$platform_user::bigint,
                \$1::bigint);
        }

        location = /status {
            platform_status;
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->utf8->canonical;
my $port = $t->port;
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

sub collect {
    my ($ws, $type, $n, $timeout) = @_;
    my @got;
    my $deadline = time + ($timeout // 10);
    while (@got < $n && time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        push @got, $m if $m->{type} eq $type;
    }
    return @got;
}

sub join_room {
    my ($cookie, $room) = @_;
    my $ws = Test::Platform::WebSocket->connect(
        port => $port, path => "/ws/events/$ev?room=$room",
        headers => { Cookie => "platform_session=$cookie" });
    $ws->{welcome} = next_json($ws) if $ws->{status} == 101;
    return $ws;
}

sub psql_until {
    my ($sql, $want, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my $got;
    while (time < $deadline) {
        $got = $t->psql($sql);
        return $got if $want->($got);
        sleep 0.2;
    }
    return $got;
}

sub metric {
    my ($name, %l) = @_;
    my $m = $t->metrics('/status', fresh => 1);
    return $t->sample($m, $name, %l) // -1;
}

my %cookie;
$cookie{$_} = $t->sign_in("$_\@example.org") for qw(org p1 p2);

$ev = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Engaged', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', o.id FROM auth.users u, o
           WHERE u.email = 'org@example.org'),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email IN ('p1@example.org', 'p2@example.org'))
SELECT e.id FROM e;
SQL
ok($ev, "an event ($ev)");
$t->psql("UPDATE auth.users SET display_name = "
         . "initcap(split_part(email, '\@', 1))");
my %uid = map { $_ => $t->psql("SELECT id FROM auth.users WHERE email = "
                               . "'$_\@example.org'") } qw(org p1 p2);

# ------------------------------------------------------------------ a session

{
    my $a1 = join_room($cookie{p1}, 'main');
    my $a2 = join_room($cookie{p1}, 'main');
    is($a1->{status} . $a2->{status}, '101101', 'p1: two sockets in main');

    is(psql_until("SELECT count(*) FROM app.chat_connections "
                  . "WHERE event_id = $ev AND user_id = $uid{p1} "
                  . "AND closed_at IS NULL", sub { $_[0] == 2 }),
       2, 'two connection rows, open');

    $a1->text($json->encode({ type => 'message', text => "hi $_" })) for 1 .. 3;
    is(scalar(collect($a2, 'message', 3, 5)), 3, 'three messages sent');

    # heartbeats every second: more items than the opens
    my $stored = 0;
    my $deadline = time + 15;
    while (time < $deadline) {
        $stored = metric('platform_chat_engagement_total', zone => 'chat',
                         what => 'stored');
        last if $stored > 2;
        sleep 0.3;
    }
    ok($stored > 2, "beats stored ($stored items)");

    $a1->close_frame(1000, '');
    $a2->close_frame(1000, '');

    is(psql_until("SELECT count(closed_at) FROM app.chat_connections "
                  . "WHERE event_id = $ev AND user_id = $uid{p1}",
                  sub { $_[0] == 2 }), 2, 'closed: closed_at on both');
    ok($t->psql("SELECT count(*) FROM app.engagement_minutes "
                . "WHERE event_id = $ev AND user_id = $uid{p1}") >= 1,
       'minutes connected recorded');
    is(psql_until("SELECT messages FROM app.engagement_counters "
                  . "WHERE event_id = $ev AND user_id = $uid{p1}",
                  sub { ($_[0] // 0) == 3 }), 3, 'three messages counted');
    is($t->psql("SELECT count(*) FROM app.chat_connections "
                . "WHERE event_id = $ev AND closed_at < opened_at"), 0,
       'closed after opened');
}

# ------------------------------------------------------------------ REST

{
    my $r = $t->req('GET', "/api/events/$ev/engagement",
                    headers => { Cookie => "platform_session=$cookie{org}" });
    is($r->{status}, 200, 'GET engagement: 200 for the organiser');
    my $b = eval { $json->decode($r->{content}) } // {};
    my ($p) = grep { $_->{user}{id} == $uid{p1} } @{$b->{participants} || []};
    ok($p && $p->{minutes} >= 1, 'p1: minutes connected');
    is($p && $p->{messages}, 3, 'p1: 3 messages');
    is($p && $p->{connections}, 2, 'p1: 2 connections');
    is($p && $p->{user}{name}, 'P1', 'p1: name');
    like($p && $p->{first_seen}, qr/^\d{4}-\d\d-\d\dT/, 'first_seen');
    like($p && $p->{last_seen}, qr/^\d{4}-\d\d-\d\dT/, 'last_seen');

    $r = $t->req('GET', "/api/events/$ev/engagement",
                 headers => { Cookie => "platform_session=$cookie{p1}" });
    is($r->{status}, 403, 'GET engagement: 403 for a participant');
}

# ------------------------------------------------------------------ retry

{
    # the INSERT refused for a while (a constraint): the batch is sent again
    my $w = join_room($cookie{p1}, 'main');
    $t->psql("ALTER TABLE app.chat_messages ADD CONSTRAINT t85_refuse "
             . "CHECK (text <> 'retried') NOT VALID");
    $w->text($json->encode({ type => 'message', text => 'retried' }));
    my $retries = 0;
    my $deadline = time + 10;
    while (time < $deadline) {
        $retries = metric('platform_chat_persist_total', zone => 'chat',
                          what => 'retries');
        last if $retries >= 1;
        sleep 0.1;
    }
    ok($retries >= 1, 'a failed batch: retried');
    $t->psql("ALTER TABLE app.chat_messages DROP CONSTRAINT t85_refuse");
    is(psql_until("SELECT count(*) FROM app.chat_messages WHERE event_id = $ev "
                  . "AND text = 'retried'", sub { $_[0] == 1 }), 1,
       'and stored once PostgreSQL takes it');
    is(metric('platform_chat_persist_total', zone => 'chat', what => 'failed'),
       0, 'nothing dropped');
    $w->close_frame(1000, '');
}

# ------------------------------------------------------------------ reload

{
    my $w = join_room($cookie{p2}, 'main');
    is($w->{status}, 101, 'p2 connected');
    is(psql_until("SELECT count(*) FROM app.chat_connections "
                  . "WHERE event_id = $ev AND user_id = $uid{p2}",
                  sub { $_[0] == 1 }), 1, 'its row');

    my %old = map { $_ => 1 } $t->worker_pids;
    kill 'HUP', $t->nginx_pid;
    my (undef, $close) = $w->read_until_close(10);
    is($close && $close->{code}, 1001, 'reload: 1001');
    $w->close_frame(1001);
    my $deadline = time + 15;
    sleep 0.1 while time < $deadline && grep { kill 0, $_ } keys %old;
    ok(!(grep { kill 0, $_ } keys %old), 'the old workers exited');

    # the exiting worker keeps its pool until its last batch is stored
    # (ngx_platform_pg.c): the connection's row is closed by the exit
    is(psql_until("SELECT count(closed_at) FROM app.chat_connections "
                  . "WHERE event_id = $ev AND user_id = $uid{p2}",
                  sub { $_[0] == 1 }), 1,
       'the exiting worker closed its connection row');
    ok($t->psql(q{SELECT maintenance.chat_connections_close('{}')}) >= 0,
       'maintenance.chat_connections_close runs (rows of crashed workers)');

    my $r = $t->get('/status');
    is($r->{status}, 200, 'the new workers answer');
}

done_testing();
