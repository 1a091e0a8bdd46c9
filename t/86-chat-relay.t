#!/usr/bin/perl

# Chat across hosts (issue 5 item 8, docs/chat.md "Across hosts"): two
# nginx instances on different ports, two workers each, one PostgreSQL.
# With relay=CHANNEL the publishes of both go through PostgreSQL, which
# numbers, stores and NOTIFYs them; every worker listens.  Every client on
# either host gets every message exactly once, in the same id order, ids
# without gaps; the history holds each message once; a late joiner on the
# other host gets them in its welcome.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Platform;
use Test::Platform::WebSocket;

my $a = Test::Platform->new(workers => 2, own_cluster => 1);
my $b = Test::Platform->new(workers => 2);
my $key = $a->key_file;
my $conninfo = $a->conninfo;

my $chat = <<"EOF";
    platform_session_key $key;
    platform_session_secure off;

    platform_chat_zone chat 4m messages=200 flush=50ms relay=platform_chat;
EOF

my $ws_location = <<'EOF';
        location ~ ^/ws/events/(\d+)$ {
            platform_auth optional;
            platform_chat event=$1;
            platform_chat_rate off;
        }

        location = /status {
            platform_status;
        }
EOF

$a->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }
$chat
    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $a->api_conf(qw(auth)) ]}
$ws_location
        location ~ ^/api/events/(\\d+)/chat/(main|admin|team|team:\\d+)/messages\$ {
            platform_auth any;
            platform_query GET api.chat_messages(\$platform_user::bigint,
                \$1::bigint, \$2, \$arg_before::bigint, \$arg_limit::int);
        }
    }
EOF

# the other host: the same database and session key, nothing else shared
$b->http_conf(<<"EOF");
    platform_pg main { server "$conninfo"; pool_size 2; }
$chat
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
$ws_location
    }
EOF

$a->run;
$b->run;

my $json = JSON::PP->new->utf8->canonical;

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
    my $deadline = time + ($timeout // 20);
    while (@got < $n && time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        push @got, $m if $m->{type} eq $type;
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

our $ev;

sub join_room {
    my ($host, $cookie, $room) = @_;
    my $ws = Test::Platform::WebSocket->connect(
        port => $host->port,
        path => "/ws/events/$ev" . (defined $room ? "?room=$room" : ''),
        headers => { Cookie => "platform_session=$cookie" });
    $ws->{welcome} = next_json($ws) if $ws->{status} == 101;
    return $ws;
}

sub say_text { $_[0]->text($json->encode({ type => 'message', text => $_[1] })) }

my %cookie = map { $_ => $a->sign_in("$_\@example.org") } qw(p1 p2 p3 p4);

$ev = $a->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Relay Night', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u)
SELECT e.id FROM e;
SQL
ok($ev, "an event ($ev) with four ticket holders");

$a->psql(<<"SQL");
UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1));
INSERT INTO app.teams (event_id, number, name) VALUES ($ev, 1, 'Team 1');
INSERT INTO app.team_members (team_id, event_id, user_id)
SELECT t.id, $ev, u.id FROM app.teams t, auth.users u
WHERE t.event_id = $ev AND u.email IN ('p1\@example.org', 'p2\@example.org');
SQL

# ------------------------------------------------------------ main room

# two clients on each host (several connections per worker, both workers)
my @clients = (
    [ a1 => join_room($a, $cookie{p1}, 'main') ],
    [ a3 => join_room($a, $cookie{p3}, 'main') ],
    [ b2 => join_room($b, $cookie{p2}, 'main') ],
    [ b4 => join_room($b, $cookie{p4}, 'main') ],
);
is($_->[1]{status}, 101, "$_->[0] joined main") for @clients;

my ($a1, $a3, $b2, $b4) = map { $_->[1] } @clients;

# interleaved publishes from both hosts
my $n = 20;
for my $i (1 .. $n) {
    say_text($a1, "from A $i");
    say_text($b2, "from B $i");
}

my %orders;
for my $c (@clients) {
    my ($name, $ws) = @$c;
    my @got = collect($ws, 'message', 2 * $n);
    is(scalar @got, 2 * $n, "$name got all " . 2 * $n . " messages");

    my %seen;
    $seen{$_->{text}}++ for @got;
    is(scalar(grep { $seen{$_} != 1 } keys %seen), 0,
       "$name: each exactly once");
    is_deeply([ map { $_->{id} } @got ], [ 1 .. 2 * $n ],
              "$name: ids 1.." . 2 * $n . " in order, no gaps");
    ok(none_of($ws, 'message', 1), "$name: no duplicate afterwards");

    my @a = map { $_->{text} } grep { $_->{text} =~ /^from A/ } @got;
    is_deeply(\@a, [ map { "from A $_" } 1 .. $n ],
              "$name: host A's messages in the order sent");
    my @b = map { $_->{text} } grep { $_->{text} =~ /^from B/ } @got;
    is_deeply(\@b, [ map { "from B $_" } 1 .. $n ],
              "$name: host B's messages in the order sent");

    $orders{$name} = join ',', map { "$_->{id}=$_->{text}" } @got;
    is($got[0]{room}, 'main', "$name: room");
    like($got[0]{sender}{name}, qr/^P[12]$/, "$name: sender as shown");
    like($got[0]{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
         "$name: time");
}

is(scalar(keys %{{ map { $_ => 1 } values %orders }}), 1,
   'all four clients saw the same sequence');

is($a->psql("SELECT count(*) || '/' || count(DISTINCT id) || '/' || max(id) "
            . "FROM app.chat_messages WHERE event_id = $ev AND room = 'main'"),
   '40/40/40', 'stored once each, ids 1..40');

# the history over REST on host A, as any page reads it
{
    my $r = $a->req('GET', "/api/events/$ev/chat/main/messages?limit=100",
                    headers => { Cookie => "platform_session=$cookie{p3}" });
    is($r->{status}, 200, 'history page');
    my $page = $json->decode($r->{content});
    is(scalar @{$page->{messages}}, 40, 'the 40 messages');
}

# a late joiner on host B: the last 20 in its welcome, from the ring
{
    my $late = join_room($b, $cookie{p4}, 'main');
    is($late->{status}, 101, 'late joiner on B');
    my @ids = map { $_->{id} } @{$late->{welcome}{messages} // []};
    is_deeply(\@ids, [ 21 .. 40 ], 'its welcome has the last 20, in order');
    $late->close_frame(1000, '');
}

# ------------------------------------------------------------ a team room

{
    my $ta = join_room($a, $cookie{p1}, 'team');
    my $tb = join_room($b, $cookie{p2}, 'team');
    is($ta->{status} . $tb->{status}, '101101', 'team room on both hosts');

    say_text($tb, 'team hello from B');
    my ($m) = collect($ta, 'message', 1);
    is($m->{text}, 'team hello from B', 'A hears B in the team room');
    is($m->{id}, 1, 'team room ids are its own');
    ok(none_of($a1, 'message', 1), 'the main room does not get it');

    say_text($ta, 'team reply from A');
    my @got = collect($tb, 'message', 2);
    is_deeply([ map { $_->{text} } @got ],
              [ 'team hello from B', 'team reply from A' ],
              'B hears its own and the reply, once each');
    $_->close_frame(1000, '') for $ta, $tb;
}

# ------------------------------------------------------------ PostgreSQL restarts

# the clients stay connected; the pools reconnect and LISTEN again
{
    $a->pg_stop;
    sleep 0.5;
    $a->pg_start;

    my $deadline = time + 30;
    my $got;
    my $i = 0;
    while (!$got && time < $deadline) {
        # publishes while the pools reconnect may fail: send until one
        # from B arrives at A, then check the ones after it
        say_text($b4, 'after restart ' . ++$i);
        while (my $m = next_json($a3, 1)) {
            if (($m->{type} // '') eq 'message') { $got = $m; last }
        }
    }
    ok($got, 'after a PostgreSQL restart B reaches A again');

    # A's worker may reconnect later than B's: send until one arrives
    my $seen_a;
    my $j = 0;
    my $deadline_a = time + 30;
    while (!$seen_a && time < $deadline_a) {
        say_text($a3, 'A after restart ' . ++$j);
        my $end = time + 2;
        while (!$seen_a && time < $end) {
            my $m = next_json($b2, $end - time) // last;
            $seen_a = 1 if ($m->{type} // '') eq 'message'
                           && $m->{text} =~ /^A after restart/;
        }
    }
    ok($seen_a, 'and A reaches B');
    sleep 1;
    for my $ws ($a1, $a3, $b2, $b4) { 1 while next_json($ws, 0.2) }    # drained
    $_->{seen} = [] for $a1, $a3, $b2, $b4;
}

# ------------------------------------------------------------ counters

{
    my $m = $a->metrics('/status', fresh => 1);
    cmp_ok($a->sample($m, 'platform_chat_relay_total', zone => 'chat',
                      result => 'relayed') // 0, '>=', 42,
           'A: messages relayed into its ring');
    cmp_ok($a->sample($m, 'platform_chat_relay_total', zone => 'chat',
                      result => 'duplicate') // 0, '>=', 1,
           'A: the second worker heard them too and skipped them');
}

$_->close_frame(1000, '') for $a1, $a3, $b2, $b4;

$b->stop;
$a->stop;

done_testing;
