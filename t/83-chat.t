#!/usr/bin/perl

# Event chat (issue 5, ngx_platform_chat.c, sql/013_chat.sql, docs/chat.md)
# with real WebSocket clients and two workers: who may join which room (no
# 101 for the others), fan-out from both workers (every message exactly
# once and in id order), presence, history on connect from the ring and
# from PostgreSQL, paging over REST, no-echo, the rate limit, a slow
# consumer beside fast ones, a full zone, persistence in batches, purge.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Platform;
use Test::Platform::WebSocket;

my $t = Test::Platform->new(workers => 2);
my $dir = $t->testdir;

$t->key_file;    # session.key in the test directory

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_chat_zone chat 4m messages=200 room_size=512k flush=50ms batch=100;
    platform_chat_zone tiny 40k pg=main messages=10 room_size=8k;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        listen 127.0.0.1:%%PORT2%% sndbuf=16k;

        @{[ $t->api_conf(qw(auth)) ]}

        location ~ ^/ws/events/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1;
            platform_chat_rate 5r/s burst=10;
            platform_chat_max_text 2000;
            platform_websocket_max_message_size 16k;
            platform_websocket_send_buffer 64k;
            add_header X-Worker \$pid always;
        }

        location ~ ^/ws/fast/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=chat;
            platform_chat_rate off;
            add_header X-Worker \$pid always;
        }

        location ~ ^/ws/tiny/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=tiny;
            platform_chat_rate off;
        }

        location ~ ^/api/events/(\\d+)/chat/presence\$ {
            platform_auth any;
            platform_chat_presence event=\$1;
        }

        location ~ ^/api/events/(\\d+)/chat/(main|admin|team|team:\\d+)/messages\$ {
            platform_auth any;
            platform_query GET api.chat_messages(\$platform_user::bigint,
                \$1::bigint, \$2, \$arg_before::bigint, \$arg_limit::int);
        }

        location = /status {
            platform_status;
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->utf8->canonical;
my $port = $t->port;

# ------------------------------------------------------------------ helpers

sub ws {
    my ($path, %o) = @_;
    my %h;
    $h{Cookie} = "platform_session=$o{cookie}" if $o{cookie};
    my $ws = Test::Platform::WebSocket->connect(
        port => $o{port} // $port, path => $path, headers => \%h,
        $o{rcvbuf} ? (rcvbuf => $o{rcvbuf}) : ());
    return $ws;
}

# the next text frame as JSON (pings are skipped), undef on timeout/close
sub next_json {
    my ($ws, $timeout) = @_;
    while (my $f = $ws->read_frame($timeout // 5)) {
        next if $f->{opcode} == 9 || $f->{opcode} == 10;
        return { type => 'close', code => $f->{code} } if $f->{opcode} == 8;
        return $json->decode($f->{payload});
    }
    return undef;
}

# frames of a type until n of them arrived (others kept in $ws->{seen})
sub collect {
    my ($ws, $type, $n, $timeout) = @_;
    my @got;
    my $deadline = time + ($timeout // 10);
    while (@got < $n && time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        if ($m->{type} eq $type) { push @got, $m } else { push @{$ws->{seen}}, $m }
    }
    return @got;
}

# nothing of that type within the time
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
    my ($cookie, $room, %o) = @_;
    my $path = ($o{path} // '/ws/events/') . ($o{event} // $main::ev)
               . (defined $room ? "?room=$room" : '');
    my $ws = ws($path, cookie => $cookie, %o);
    if ($ws->{status} == 101) {
        $ws->{welcome} = next_json($ws);
    }
    return $ws;
}

sub say_text { my ($ws, $text) = @_;
               $ws->text($json->encode({ type => 'message', text => $text })) }

sub api_get {
    my ($path, $cookie) = @_;
    my $r = $t->req('GET', $path,
                    headers => { Cookie => "platform_session=$cookie" });
    return ($r->{status}, eval { $json->decode($r->{content}) } // {});
}

sub metric {
    my ($name, %l) = @_;
    my $m = $t->metrics('/status', fresh => 1);
    return $t->sample($m, $name, %l) // -1;
}

# ------------------------------------------------------------------ set-up

my %cookie;
for my $p (qw(org p1 p2 p3 p4 out)) {
    $cookie{$p} = $t->sign_in("$p\@example.org");
}

my $setup = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Chat Night', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', o.id FROM auth.users u, o
           WHERE u.email = 'org@example.org'),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email IN ('p1@example.org', 'p2@example.org',
                              'p3@example.org', 'p4@example.org'))
SELECT e.id FROM e;
SQL
our $ev = $setup;
ok($ev, "an event ($ev), an organiser, four ticket holders");

$t->psql(<<"SQL");
UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1));
INSERT INTO app.teams (event_id, number, name)
SELECT $ev, n, 'Team ' || n FROM generate_series(1, 40) AS n;
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT t.id, $ev, u.id FROM app.teams t, auth.users u
WHERE t.event_id = $ev AND ((t.number = 1 AND u.email IN ('p1\@example.org',
      'p2\@example.org')) OR (t.number = 2 AND u.email = 'p3\@example.org'));
SQL
my @teams = split /\n/, $t->psql("SELECT id FROM app.teams WHERE event_id = $ev "
                                . "ORDER BY number");
my ($t1, $t2) = @teams[0, 1];
my %uid = map { $_ => $t->psql("SELECT id FROM auth.users WHERE email = "
                               . "'$_\@example.org'") } qw(org p1 p2 p3 p4 out);

# ------------------------------------------------------------------ authorization

{
    my $ws = join_room(undef, 'main');
    is($ws->{status}, 401, 'no session: 401');
    ok(!$ws->{headers}{'sec-websocket-accept'}, 'and no 101');

    $ws = join_room($cookie{out}, 'main');
    is($ws->{status}, 403, 'no ticket: main is 403');
    ok(!$ws->{headers}{'sec-websocket-accept'}, 'and no 101');
    like($ws->{body} // '', qr/ticket holders/, 'the error names why');

    $ws = join_room($cookie{p1}, 'main', event => 999999);
    is($ws->{status}, 404, 'no such event: 404');
    $ws = join_room($cookie{p1}, 'lobby');
    is($ws->{status}, 404, 'no such room: 404');
    $ws = join_room($cookie{p1}, 'admin');
    is($ws->{status}, 403, 'participant: admin is 403');
    $ws = join_room($cookie{p1}, "team:$t2");
    is($ws->{status}, 403, "participant: another team's room is 403");
    $ws = join_room($cookie{p4}, 'team');
    is($ws->{status}, 403, 'participant in no team: team is 403');

    $ws = join_room($cookie{p1}, 'main');
    is($ws->{status}, 101, 'ticket holder: main 101');
    ok($ws->accept_ok, 'Sec-WebSocket-Accept');
    is($ws->{welcome}{type}, 'welcome', 'a welcome frame first');
    is($ws->{welcome}{room}, 'main', 'room main');
    is($ws->{welcome}{user}{name}, 'P1', 'the display name');
    is($ws->{welcome}{role}, 'participant', 'role participant');
    $ws->close_frame(1000, '');

    $ws = join_room($cookie{p2}, 'team');
    is($ws->{status}, 101, 'team member: "team" 101');
    is($ws->{welcome}{room}, "team:$t1", "it is the room team:$t1");

    my $ws2 = join_room($cookie{p1}, "team:$t1");
    is($ws2->{status}, 101, 'team member: team:<own id> 101');
    is($ws2->{welcome}{count}, 2, 'two in the team room');
    my ($p) = collect($ws, 'presence', 1);
    is($p && $p->{joined}{name}, 'P1', 'presence: joined notice to the other');
    is($p && $p->{count}, 2, 'presence: count 2');
    $ws2->close_frame(1000, '');
    ($p) = collect($ws, 'presence', 1);
    is($p && $p->{left}{name}, 'P1', 'presence: left notice');
    is($p && $p->{count}, 1, 'presence: count 1');

    my $team = $ws;
    $ws = join_room($cookie{org}, 'admin');
    is($ws->{status}, 101, 'organiser: admin 101');
    is($ws->{welcome}{role}, 'organiser', 'role organiser');
    $ws2 = join_room($cookie{org}, "team:$t2");
    is($ws2->{status}, 101, 'organiser: any team room 101');

    my ($st, $b) = api_get("/api/events/$ev/chat/presence", $cookie{org});
    is($st, 200, 'presence list: 200 for the organiser');
    my %rooms = map { $_->{room} => $_->{count} } @{$b->{rooms} || []};
    is($rooms{admin}, 1, 'presence list: admin 1');
    is($rooms{"team:$t1"}, 1, "presence list: team:$t1 1");
    ($st) = api_get("/api/events/$ev/chat/presence", $cookie{p1});
    is($st, 403, 'presence list: 403 for a participant');
}

# ------------------------------------------------------------------ fan-out

my @all;
{
    # clients until both workers have some (reuseport spreads them)
    my (@c, %pids);
    for my $i (0 .. 23) {
        my $who = (qw(p1 p2 p3 p4))[$i % 4];
        my $ws = join_room($cookie{$who}, 'main', path => '/ws/fast/');
        $ws->{who} = $who;
        push @c, $ws;
        $pids{$ws->{headers}{'x-worker'} // '?'}++;
        last if @c >= 8 && keys %pids >= 2;
    }
    is(scalar(grep { $_->{status} == 101 } @c), scalar @c,
       scalar(@c) . ' clients in main');
    is(scalar(keys %pids), 2, 'on both workers (' . join(' ', map { "$_:$pids{$_}" } sort keys %pids) . ')');

    # three senders on different workers when possible, 10 each
    my %by;
    push @{$by{$_->{headers}{'x-worker'}}}, $_ for @c;
    my @senders = (values %by)[0]->[0];
    push @senders, (values %by)[-1]->[0], $c[2];
    for my $n (1 .. 10) {
        for my $s (0 .. $#senders) {
            say_text($senders[$s], "m$s-$n");
        }
    }

    my $ok = 0;
    my $ordered = 0;
    my %sets;
    for my $ws (@c) {
        my @m = collect($ws, 'message', 30, 10);
        my @ids = map { $_->{id} } @m;
        $ok++ if @m == 30 && none_of($ws, 'message', 0.2);
        $ordered++ if join(',', @ids) eq join(',', sort { $a <=> $b } @ids)
                      && (grep { $ids[$_] == $ids[$_ - 1] + 1 } 1 .. $#ids)
                         == $#ids;
        $sets{join ',', map { "$_->{id}:$_->{text}" } @m}++;
    }
    is($ok, scalar @c, 'every client got 30 messages, exactly');
    is($ordered, scalar @c, 'in id order, without gaps');
    is(scalar keys %sets, 1, 'the same messages everywhere');

    my ($one) = (keys %sets);
    my ($id1, $text1) = $one =~ /^(\d+):([^,]+)/;
    ok($id1 >= 1, "ids from $id1");

    # the message's shape
    say_text($c[1], "hello <\"x\"> é");
    my ($msg) = collect($c[0], 'message', 1);
    is_deeply([sort keys %{$msg || {}}],
              [qw(id room sender text time type)], 'message fields');
    is($msg->{text}, "hello <\"x\"> é", 'the text, escaped and back');
    is($msg->{room}, 'main', 'room');
    is($msg->{sender}{id}, $uid{$c[1]{who}}, 'sender id');
    is($msg->{sender}{name}, uc $c[1]{who}, 'sender name');
    ok(exists $msg->{sender}{avatar}, 'sender avatar (null)');
    like($msg->{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'time');
    @all = @c;
}

# ------------------------------------------------------------------ history

{
    my $ws = join_room($cookie{p4}, 'main');
    my $h = $ws->{welcome}{messages};
    is(scalar @$h, 20, 'history on connect: the last 20 messages');
    is($h->[-1]{text}, "hello <\"x\"> é", 'ending with the newest');
    my @ids = map { $_->{id} } @$h;
    is($ids[-1] - $ids[0], 19, 'consecutive ids');

    sleep 0.3;    # the batch flush

    my ($st, $b) = api_get("/api/events/$ev/chat/main/messages?before=$ids[0]&limit=5",
                           $cookie{p2});
    is($st, 200, 'REST page: 200');
    is_deeply([map { $_->{id} } @{$b->{messages} || []}],
              [$ids[0] - 5 .. $ids[0] - 1], 'the 5 before, oldest first');
    is_deeply($b->{messages}[-1] && [sort keys %{$b->{messages}[-1]}],
              [qw(id room sender text time type)], 'the same shape as live');
    ok($b->{more}, 'more');
    ($st) = api_get("/api/events/$ev/chat/main/messages", $cookie{out});
    is($st, 403, 'REST page: no ticket 403');
    ($st) = api_get("/api/events/$ev/chat/team:$t2/messages", $cookie{p1});
    is($st, 403, "REST page: another team's room 403");

    # a room that is not live: history from PostgreSQL, ids go on
    $t->psql(<<"SQL");
INSERT INTO app.chat_messages (event_id, room, id, user_id, sender_name, text)
SELECT $ev, 'team:$t2', n, $uid{p3}, 'P3', 'old ' || n
FROM generate_series(1, 30) AS n;
SQL
    my $w = join_room($cookie{p3}, "team:$t2");
    is($w->{status}, 101, 'p3 joins its team room');
    $h = $w->{welcome}{messages};
    is_deeply([map { $_->{id} } @$h], [11 .. 30],
              'history from PostgreSQL: the last 20');
    is($h->[0]{text}, 'old 11', 'their text');
    say_text($w, 'new one');
    my ($m) = collect($w, 'message', 1);
    is($m && $m->{id}, 31, 'the next id follows the stored ones');

    # both: the ring has a few, PostgreSQL the rest
    $w->close_frame(1000, '');
    my $w2 = join_room($cookie{org}, "team:$t2");
    is_deeply([map { $_->{id} } @{$w2->{welcome}{messages}}], [12 .. 31],
              'history from the ring and PostgreSQL together');
}

# ------------------------------------------------------------------ no-echo

{
    my ($a, $b) = @all[0, 1];
    collect($_, 'message', 100, 0.3) for @all;
    $a->text($json->encode({ type => 'options', echo => JSON::PP::false }));
    say_text($a, 'quiet');
    say_text($b, 'loud');
    my @m = collect($a, 'message', 1, 3);
    is($m[0] && $m[0]{text}, 'loud', 'no-echo: the sender gets the others\' only');
    @m = collect($b, 'message', 2, 3);
    is(join(',', map { $_->{text} } @m), 'quiet,loud', 'others get it');
    $a->text('{"type":"options","echo":true}');
    say_text($a, 'again');
    @m = collect($a, 'message', 1, 3);
    is($m[0] && $m[0]{text}, 'again', 'echo back on');

    $a->text('not json');
    my ($e) = collect($a, 'error', 1);
    is($e && $e->{code}, 'bad_request', 'not JSON: an error frame');
    $a->text('{"type":"message","text":""}');
    ($e) = collect($a, 'error', 1);
    is($e && $e->{code}, 'bad_request', 'empty text: an error frame');
    $a->text('{"type":"message","text":"\u0000"}');
    ($e) = collect($a, 'error', 1);
    is($e && $e->{code}, 'bad_request', '\u0000: an error frame');
    say_text($a, 'x' x 2001);
    ($e) = collect($a, 'error', 1);
    is($e && $e->{code}, 'too_long', 'over platform_chat_max_text: too_long');
}

# ------------------------------------------------------------------ rate limit

{
    my $ws = join_room($cookie{p2}, 'main');
    collect($ws, 'x', 1, 0.3);
    say_text($ws, "burst $_") for 1 .. 16;
    my (@m, @e);
    my $deadline = time + 3;
    while (time < $deadline && @m + @e < 16) {
        my $f = next_json($ws, 1) // last;
        push @m, $f if $f->{type} eq 'message' && $f->{text} =~ /^burst/;
        push @e, $f if $f->{type} eq 'error';
    }
    ok(@m >= 10 && @m <= 12, 'rate 5r/s burst=10: ' . scalar(@m) . ' pass');
    ok(@e >= 4, scalar(@e) . ' rate_limited error frames');
    is($e[0] && $e[0]{code}, 'rate_limited', 'code rate_limited');
    sleep 1;
    say_text($ws, 'after the pause');
    my ($m) = grep { $_->{text} eq 'after the pause' }
              collect($ws, 'message', 1, 3);
    ok($m, 'not closed: sends again after a pause');
}

# ------------------------------------------------------------------ slow consumer

{
    my $slow = join_room($cookie{p3}, 'main', port => $t->port2, rcvbuf => 4096);
    is($slow->{status}, 101, 'a client that will not read');
    my $sender = join_room($cookie{p4}, 'main', path => '/ws/fast/');
    collect($_, 'message', 1000, 0.3) for @all;

    my $big = 'B' x 1900;
    say_text($sender, "$big $_") for 1 .. 150;

    my ($fine) = (0);
    for my $ws (@all) {
        my @m = grep { $_->{text} =~ /^B+ \d+$/ } collect($ws, 'message', 150, 15);
        $fine++ if @m == 150;
    }
    is($fine, scalar @all, 'the other clients got all 150');
    my ($before, $close) = $slow->read_until_close(10);
    is($close && $close->{code}, 1008, 'the slow one: closed with 1008');
}

# ------------------------------------------------------------------ full zone

{
    # the 40k zone holds a few rooms of 1 KB messages: rooms come and go
    my ($bad, $echo) = (0, 0);
    for my $i (0 .. 29) {
        my $ws = join_room($cookie{org}, "team:$teams[$i]", path => '/ws/tiny/');
        if ($ws->{status} != 101) { $bad++; next }
        say_text($ws, "t$i-$_ " . ('z' x 1000)) for 1 .. 4;
        my @m = collect($ws, 'message', 4, 5);
        $echo++ if @m == 4;
        $ws->close_frame(1000, '') if $i % 2;
    }
    is($bad, 0, 'a full zone: every handshake 101, no 5xx');
    is($echo, 30, 'every message delivered');
    ok(metric('platform_chat_evicted_total', zone => 'tiny', what => 'entries') > 0,
       'entries were evicted');
    my $r = $t->get('/status');
    is($r->{status}, 200, 'nginx alive');
}

# ------------------------------------------------------------------ persistence

{
    sleep 0.5;
    my $pub = metric('platform_chat_messages_total', zone => 'chat',
                     result => 'published')
            + metric('platform_chat_messages_total', zone => 'tiny',
                     result => 'published');
    my $stored = metric('platform_chat_persist_total', zone => 'chat', what => 'stored')
               + metric('platform_chat_persist_total', zone => 'tiny', what => 'stored');
    my $batches = metric('platform_chat_persist_total', zone => 'chat', what => 'batches')
                + metric('platform_chat_persist_total', zone => 'tiny', what => 'batches');
    is($stored, $pub, "every published message stored ($pub)");
    my $rows = $t->psql("SELECT count(*) FROM app.chat_messages "
                        . "WHERE event_id = $ev") - 30;
    is($rows, $pub, 'and in app.chat_messages');
    ok($batches < $pub / 3, "in $batches batches (INSERT statements) for $pub messages");
    is(metric('platform_chat_persist_total', zone => 'chat', what => 'failed'), 0,
       'none failed');
    ok(metric('platform_chat_messages_total', zone => 'chat', result => 'delivered')
       > 30 * 8, 'status: delivered');
    is($t->psql("SELECT count(*) FROM (SELECT room, id FROM app.chat_messages "
                . "WHERE event_id = $ev AND room = 'main' ORDER BY id) s"),
       $t->psql("SELECT max(id) FROM app.chat_messages WHERE event_id = $ev "
                . "AND room = 'main'"), 'main: ids 1..n, no gaps');
}

# ------------------------------------------------------------------ purge

{
    $t->psql("UPDATE app.chat_messages SET created_at = now() - interval '26 days' "
             . "WHERE event_id = $ev AND room = 'team:$t2' AND id <= 10");
    is($t->psql(q{SELECT jobs.check_payload('sql', '{"function":"chat_purge","args":{}}')}),
       '', 'chat_purge is a valid sql job');
    is($t->psql(q{SELECT maintenance.chat_purge('{}')}), 10,
       'purge: the 10 older than 25 days');
    is($t->psql(q{SELECT maintenance.chat_purge('{"days":1}')}), 0,
       'nothing else is a day old');
}

# ------------------------------------------------------------------ fan-out, many

SKIP: {
    skip 'python3-websockets not installed', 2
        unless system('/usr/bin/python3', '-c', 'import websockets') == 0;

    $_->close_frame(1000, '') for @all;
    my $n = $ENV{CHAT_FANOUT_CLIENTS} || 200;
    my $m = $ENV{CHAT_FANOUT_MESSAGES} || 50;
    my $out = `/usr/bin/python3 @{[ $t->root ]}/t/lib/chat_fanout.py $port /ws/fast/$ev?room=team:$teams[5] $cookie{org} $n $m 2>&1`;
    my $r = eval { $json->decode($out) } // {};
    is($r->{deliveries}, $n * $m, "$n clients x $m messages: all delivered")
        or diag($out);
    diag("fan-out: $n clients, $m messages: $r->{deliveries_per_s} "
         . "deliveries/s, p50 $r->{p50_ms} ms, p99 $r->{p99_ms} ms "
         . "(client-bound: one Python process)") if $r->{deliveries};
    is(metric('platform_chat_messages_total', zone => 'chat', result => 'lagged'),
       0, 'no worker lagged behind a ring');
}

done_testing();
