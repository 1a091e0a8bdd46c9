#!/usr/bin/perl

# Chat and `nginx -s reload` (issue 5 item 10; docs/chat.md "Reload"):
# clients connected to both workers, messages sent and delivered, more
# messages in flight, then a reload.  The old workers close every socket
# with 1001 (after what was queued), the clients reconnect to the new
# workers, and no message accepted before the reload (delivered to anyone,
# or acknowledged by the sender's echo) is missing from the history: the
# welcome frame and the REST pages.  Ids go on without reuse.  The harness
# checks the error log for alerts at the end.

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

    platform_chat_zone chat 4m messages=500 room_size=512k flush=200ms batch=50;
    platform_websocket_shutdown_timeout 3s;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $t->api_conf(qw(auth)) ]}

        location ~ ^/ws/events/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=chat;
            platform_chat_rate off;
            platform_chat_history 20;
            add_header X-Worker \$pid always;
        }

        location ~ ^/api/events/(\\d+)/chat/(main|admin|team|team:\\d+)/messages\$ {
            platform_auth any;
            platform_query GET api.chat_messages(\$platform_user::bigint,
                \$1::bigint, \$2, \$arg_before::bigint, \$arg_limit::int);
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->utf8->canonical;
my $port = $t->port;

sub next_json {
    my ($ws, $timeout) = @_;
    while (my $f = $ws->read_frame($timeout // 5)) {
        next if $f->{opcode} == 9 || $f->{opcode} == 10;
        return { type => 'close', code => $f->{code}, reason => $f->{reason} }
            if $f->{opcode} == 8;
        return $json->decode($f->{payload});
    }
    return undef;
}

sub join_main {
    my ($cookie) = @_;
    my $ws = Test::Platform::WebSocket->connect(
        port => $port, path => "/ws/events/$main::ev?room=main",
        headers => { Cookie => "platform_session=$cookie" });
    $ws->{welcome} = next_json($ws) if $ws->{status} == 101;
    return $ws;
}

sub say_text { my ($ws, $text) = @_;
               $ws->text($json->encode({ type => 'message', text => $text })) }

# messages until N arrived or the time is up; stops at a close frame
sub messages {
    my ($ws, $n, $timeout) = @_;
    my @got;
    my $deadline = time + $timeout;
    while (@got < $n && time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        if ($m->{type} eq 'close') { $ws->{close} = $m; last }
        push @got, $m if $m->{type} eq 'message';
    }
    return @got;
}

# ------------------------------------------------------------------ set-up

my %cookie = map { $_ => $t->sign_in("$_\@example.org") } qw(p1 p2 p3 p4);

our $ev = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Reload Night', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email LIKE 'p_@example.org')
SELECT e.id FROM e;
SQL
ok($ev, "an event ($ev), four ticket holders");

my @who = qw(p1 p2 p3 p4);
my (@c, %pids);
for my $i (0 .. 31) {
    my $ws = join_main($cookie{$who[$i % 4]});
    push @c, $ws;
    $pids{$ws->{headers}{'x-worker'} // '?'}++;
    last if @c >= 8 && keys %pids >= 2;
}
is(scalar(grep { $_->{status} == 101 } @c), scalar @c, scalar(@c) . ' clients in main');
is(scalar(keys %pids), 2, 'on both workers');

my %by;
push @{$by{$_->{headers}{'x-worker'}}}, $_ for @c;
my @senders = map { $_->[0] } values %by;    # one on each worker

# ------------------------------------------------------------------ before

my %accepted;    # id -> text: delivered to someone before the reload
for my $n (1 .. 10) {
    say_text($senders[$_], "before $_-$n") for 0 .. $#senders;
}
my $all = 0;
for my $ws (@c) {
    my @m = messages($ws, 10 * @senders, 10);
    $all++ if @m == 10 * @senders;
    $accepted{$_->{id}} = $_->{text} for @m;
}
is($all, scalar @c, 'every client got every message before the reload');

# in flight: sent, nobody has read anything yet, then the reload
for my $n (1 .. 15) {
    say_text($senders[$_], "flight $_-$n") for 0 .. $#senders;
}
my $t0 = time;
$t->reload;
note(sprintf 'reload took %.1f s', time - $t0);

my ($closed, $eof) = (0, 0);
for my $ws (@c) {
    my @m = messages($ws, 1e9, 10);
    $accepted{$_->{id}} = $_->{text} for @m;
    $closed++ if $ws->{close} && $ws->{close}{code} == 1001;
    $eof++ if $ws->wait_eof(5);
}
is($closed, scalar @c, 'every client got close 1001 from the old worker');
is($eof, scalar @c, 'and then the TCP close');
my $flight = grep { /^flight/ } values %accepted;
note("$flight of " . 15 * @senders . ' in-flight messages were delivered before the close');
my @ids = sort { $a <=> $b } keys %accepted;
is(scalar @ids, $ids[-1] - $ids[0] + 1, 'the accepted ids have no gaps');

# ------------------------------------------------------------------ after

my (@d, %new);
for my $i (0 .. $#c) {
    my $ws = join_main($cookie{$who[$i % 4]});
    push @d, $ws;
    $new{$ws->{headers}{'x-worker'} // '?'}++;
}
is(scalar(grep { $_->{status} == 101 } @d), scalar @d, 'every client reconnected');
ok(!(grep { $pids{$_} } keys %new), 'to the new workers');

my $w = $d[0]{welcome} || {};
my @wids = map { $_->{id} } @{$w->{messages} || []};
is(scalar @wids, 20, 'the welcome has the last 20 messages');
ok(@wids && $wids[-1] >= $ids[-1], "up to the newest accepted one ($ids[-1])");
my %wtext = map { $_->{id} => $_->{text} } @{$w->{messages} || []};
is(scalar(grep { $_ >= ($wids[0] // 1e9) && $_ <= $ids[-1]
                 && ($wtext{$_} // '') ne $accepted{$_} } @ids), 0,
   'the accepted ones among them, with their text');

# The REST pages: everything from the first message on.  The old workers
# wrote their last batches when they shut down; give PostgreSQL a moment.
my %stored;
my $deadline = time + 10;
while (time < $deadline) {
    %stored = ();
    my $before = '';
    for (1 .. 20) {
        my $r = $t->req('GET', "/api/events/$ev/chat/main/messages?limit=100$before",
                        headers => { Cookie => "platform_session=$cookie{p1}" });
        diag("REST: $r->{status} $r->{content}") if $r->{status} != 200;
        last unless $r->{status} == 200;
        my $b = $json->decode($r->{content});
        $stored{$_->{id}} = $_->{text} for @{$b->{messages} || []};
        last unless $b->{more} && @{$b->{messages} || []};
        $before = "&before=$b->{messages}[0]{id}";
    }
    last unless grep { !exists $stored{$_} } @ids;
    sleep 0.2;
}
# the old workers store their last batches before they exit: the pool
# keeps its connections through the graceful shutdown (ngx_platform_pg.c)
my @lost = grep { ($stored{$_} // '') ne $accepted{$_} } @ids;
is_deeply(\@lost, [], 'no accepted message is missing from the stored history')
    or diag('stored ' . scalar(keys %stored) . ' of ' . scalar(@ids));

my %seen;
my $dup = grep { $seen{$_}++ } values %stored;
is($dup, 0, 'nothing stored twice');

say_text($d[1], 'after the reload');
my $got = 0;
my $next;
for my $ws (@d) {
    my @m = messages($ws, 1, 10);
    $got++ if @m == 1 && $m[0]{text} eq 'after the reload';
    $next //= $m[0] && $m[0]{id};
}
is($got, scalar @d, 'a message after the reload reaches everyone');
my $max = (sort { $a <=> $b } keys %stored)[-1] // 0;
ok($next && $next > $ids[-1], "its id follows the ones before ($next > $ids[-1])");
is($next, $max + 1, 'the stored history has no gap before it');

$_->close_frame(1000, '') for @d;

done_testing();
