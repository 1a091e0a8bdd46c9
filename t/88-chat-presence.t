#!/usr/bin/perl

# Presence notices in a big room (ngx_platform_chat.c, docs/chat.md
# "Presence"): while a room has at most platform_chat_presence_notices
# users, each join and leave is announced with the user; above, the
# changes are summed up in {"type":"presence","count","users"}, at most one
# per room and second, so N people joining cost about N deliveries a
# second instead of N².  Raw WebSocket clients, two workers, the limit set
# to 3.

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

    platform_chat_zone chat 4m messages=200 flush=50ms batch=100;
    platform_chat_presence_notices 3;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $t->api_conf(qw(auth)) ]}

        location ~ ^/ws/events/(\\d+)\$ {
            platform_auth optional;
            platform_chat event=\$1 zone=chat;
            add_header X-Worker \$pid always;
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

# presence frames until one matches (or the deadline); all of them
sub presence_until {
    my ($ws, $match, $timeout) = @_;
    my @got;
    my $deadline = time + ($timeout // 15);
    while (time < $deadline) {
        my $m = next_json($ws, $deadline - time) // last;
        next unless $m->{type} eq 'presence';
        push @got, $m;
        last if $match->($m);
    }
    return @got;
}

sub join_room {
    my ($cookie) = @_;
    my $ws = Test::Platform::WebSocket->connect(
        port => $port, path => "/ws/events/$ev?room=main",
        headers => { Cookie => "platform_session=$cookie" });
    $ws->{welcome} = next_json($ws) if $ws->{status} == 101;
    return $ws;
}

my @names = map { "p$_" } 1 .. 12;
my %cookie = map { $_ => $t->sign_in("$_\@example.org") } @names;

$ev = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id)
           SELECT 'Big Room', 'hackathon', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id FROM o RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email LIKE 'p%@example.org')
SELECT e.id FROM e;
SQL
ok($ev, "an event ($ev) with 12 ticket holders");
$t->psql("UPDATE auth.users SET display_name = initcap(split_part(email, '\@', 1))");
my %uid = map { $_ => $t->psql("SELECT id FROM auth.users WHERE email = "
                               . "'$_\@example.org'") } @names;

# ------------------------------------------------------------------ small: each one

my %ws;
$ws{p1} = join_room($cookie{p1});
is($ws{p1}{status}, 101, 'p1 in the main room');

for my $p (qw(p2 p3)) {
    $ws{$p} = join_room($cookie{$p});
    my @n = presence_until($ws{p1}, sub { 1 });
    is($n[0] && $n[0]{joined} && $n[0]{joined}{id}, $uid{$p},
       "up to 3 users: p1 is told $p joined, by name");
}
is(presence_until($ws{p1}, sub { 1 }, 0.3), 0, 'nothing more');

# ------------------------------------------------------------------ big: summaries

$ws{p4} = join_room($cookie{p4});
is($ws{p4}{welcome}{users}, 4, 'p4\'s welcome: 4 users');
is(scalar @{$ws{p4}{welcome}{present} || []}, 4, 'and the list of the 4');
{
    my @n = presence_until($ws{p1}, sub { 1 });
    ok($n[0] && !exists $n[0]{joined} && !exists $n[0]{left},
       'the 4th user: a summary, no name') or diag(explain(\@n));
    is($n[0] && "$n[0]{count} $n[0]{users}", '4 4', 'count 4, users 4');
}

# eight more join at once, from both workers

my $start = time;
my %pids;
for my $p (map { "p$_" } 5 .. 12) {
    $ws{$p} = join_room($cookie{$p});
    $pids{$ws{$p}{headers}{'x-worker'} // ''}++;
}
my @n = presence_until($ws{p1}, sub { $_[0]{users} == 12 });
my $took = time - $start;
is(scalar(grep { exists $_->{joined} || exists $_->{left} } @n), 0,
   'eight more join: no notice names anyone');
is($n[-1] && "$n[-1]{count} $n[-1]{users}", '12 12',
   'the last summary: count 12, users 12');
ok(@n <= 2 + int($took),
   sprintf('%d summaries in %.1f s: at most one a second (+1)', scalar @n, $took));
diag(sprintf('%d summaries for 8 joins in %.1f s, %d workers', scalar @n, $took,
             scalar keys %pids));
{
    my @m = presence_until($ws{p12}, sub { $_[0]{users} == 12 }, 3);
    ok(!grep({ exists $_->{joined} } @m), 'the last to join gets no name either');
}

# the same user again: no summary is owed
my $again = join_room($cookie{p2});
is($again->{welcome}{count}, 13, 'p2\'s second socket: count 13');
is($again->{welcome}{users}, 12, 'users still 12');
$again->close_socket;

# leaving, down to 3: summaries; below: names again

for my $p (map { "p$_" } reverse 5 .. 12) {
    $ws{$p}->close_socket;
    delete $ws{$p};
}
@n = presence_until($ws{p1}, sub { $_[0]{users} == 4 && $_[0]{count} == 4 });
is(scalar(grep { exists $_->{joined} || exists $_->{left} } @n), 0,
   'eight leave: no notice names anyone');
is($n[-1] && "$n[-1]{count} $n[-1]{users}", '4 4', 'summed up: count 4, users 4');

$ws{p4}->close_socket;
delete $ws{p4};
@n = presence_until($ws{p1}, sub { $_[0]{users} == 3 });
ok($n[-1] && !exists $n[-1]{left}, 'p4 leaves a room of 4: a summary')
    or diag(explain(\@n));
is($n[-1] && $n[-1]{users}, 3, 'users 3');

$ws{p3}->close_socket;
delete $ws{p3};
@n = presence_until($ws{p1}, sub { exists $_[0]{left} });
is($n[-1] && $n[-1]{left} && $n[-1]{left}{id}, $uid{p3},
   'p3 leaves a room of 3: by name again');
is($n[-1] && $n[-1]{users}, 2, 'users 2');

# a message still goes through
$ws{p2}->text($json->encode({ type => 'message', text => 'still here' }));
my $got;
for (1 .. 20) {
    my $m = next_json($ws{p1}) // last;
    if ($m->{type} eq 'message') { $got = $m->{text}; last }
}
is($got, 'still here', 'messages are delivered as before');

$_->close_socket for values %ws;

done_testing();
