#!/usr/bin/perl

# WebSocket (RFC 6455) conformance of platform_websocket, with a raw client
# (t/lib/Test/Platform/WebSocket.pm) that sends exactly the bytes a case
# needs.  The cases follow the Autobahn test-suite's categories (1 framing,
# 2 pings/pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8,
# 7 close handling, 9 limits) and assert what the RFC requires: the echo,
# the close code the server sends, and that the server closes TCP.  Then
# the handshake (refusals never answer 101; platform_auth refuses before
# the handler), keepalive pings and the idle timeout, a slow consumer next
# to a fast one, the statistics, reload and quit (1001, no alert).

use strict;
use warnings;

use POSIX ();
use Test::More;
use Test::Platform;
use Test::Platform::WebSocket qw(frame);
use Time::HiRes qw(time sleep);

my $t = Test::Platform->new(workers => 1);
my $dir = $t->testdir;

{
    open my $fh, '<', '/dev/urandom' or die $!;
    read $fh, my $key, 32;
    open my $out, '>', "$dir/session.key" or die $!;
    binmode $out;
    print $out $key;
    close $out;
}

$t->psql(<<'EOF');
CREATE FUNCTION api.t_issue(claims text) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('response.session', claims, true);
    RETURN '{"ok":true}';
END
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 1; }
    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;

    log_format ws '$request_uri $status user=$platform_user';

    platform_websocket_close_timeout 1s;
    platform_websocket_shutdown_timeout 2s;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /ws { platform_websocket echo; }

        location = /ws-auth {
            platform_auth any;
            platform_websocket echo;
            access_log %%TESTDIR%%/ws.log ws;
        }

        location = /ws-ping {
            platform_websocket echo;
            platform_websocket_ping_interval 300ms;
            platform_websocket_idle_timeout 1s;
        }

        location = /ws-small {
            platform_websocket echo;
            platform_websocket_max_message_size 1000;
            platform_websocket_send_buffer 2k;
        }

        location = /issue { platform_query GET api.t_issue($arg_c); }
        location = /status { platform_status; }
    }

    # a small socket buffer, so that a client that does not read shows at once
    server {
        listen 127.0.0.1:%%PORT2%% sndbuf=16k;

        location = /ws {
            platform_websocket echo;
            platform_websocket_send_buffer 128k;
            platform_websocket_close_timeout 5s;
        }
    }
EOF

$t->run;

sub ws {
    my ($path, %o) = @_;
    my $port = delete $o{port} // $t->port;
    return Test::Platform::WebSocket->connect(port => $port,
                                              path => $path // '/ws', %o);
}

sub frames_desc {
    return join ', ', map {
        my $p = $_->{payload};
        sprintf('op%d/%d%s', $_->{opcode}, length $p,
                length $p < 20 ? " '$p'" : '')
    } @_;
}

# Expects these messages ([opcode, payload] ...) as frames, in order.
sub echoes {
    my ($ws, $name, @want) = @_;

    my $i = 0;
    for my $w (@want) {
        $i++;
        my $f = $ws->read_frame(5);
        if (!$f) {
            fail("$name: frame $i arrived");
            return;
        }
        my $ok = $f->{opcode} == $w->[0] && $f->{payload} eq $w->[1]
                 && $f->{fin} && !$f->{masked} && !$f->{rsv};
        ok($ok, "$name: frame $i is op$w->[0] of " . length($w->[1])
                . ' bytes') or diag('got ' . frames_desc($f));
    }
}

# The client closes with 1000: the server echoes it and closes TCP.
sub closes_clean {
    my ($ws, $name, %o) = @_;

    $ws->close_frame(1000);
    my ($before, $close) = $ws->read_until_close(5);

    # pings of a ping interval may cross the close
    @$before = grep { $_->{opcode} != 9 } @$before if $o{pings};
    is(frames_desc(@$before), '', "$name: nothing more before the close");
    is($close && $close->{code}, 1000, "$name: close 1000 echoed");
    ok($ws->wait_eof(5), "$name: server closed TCP");
}

# The server fails the connection: close with this code, then TCP closed.
# before => [[opcode, payload]...] are the frames expected first.
sub fails {
    my ($ws, $code, $name, %o) = @_;

    my ($before, $close) = $ws->read_until_close($o{timeout} // 5);

    is(frames_desc(@$before),
       frames_desc(map { { opcode => $_->[0], payload => $_->[1] } }
                   @{$o{before} || []}),
       "$name: frames before the close");
    is($close && $close->{code}, $code, "$name: close $code")
        or diag($close ? "reason: $close->{reason}" : 'no close frame');
    ok($ws->wait_eof(5), "$name: server closed TCP");
}

# --- 1 framing -------------------------------------------------------------

for my $len (0, 125, 126, 127, 128, 65535, 65536) {
    for my $op ([1, 'text', '*'], [2, 'binary', "\xfe"]) {
        my $name = "1 $op->[1] of $len bytes";
        my $ws = ws();
        my $payload = $op->[2] x $len;
        $ws->send_frame(opcode => $op->[0], payload => $payload);
        my $f = $ws->read_frame(5);
        ok($f && $f->{opcode} == $op->[0] && $f->{payload} eq $payload,
           "$name: echoed");
        is($f && $f->{header_len},
           $len < 126 ? 2 : $len < 65536 ? 4 : 10,
           "$name: server uses the shortest length");
        closes_clean($ws, $name);
    }
}

{
    my $ws = ws();
    my $payload = '*' x 65535;
    $ws->send_raw(frame(opcode => 1, payload => $payload), chunk => 997);
    echoes($ws, '1 65535 bytes sent in 997-byte chops', [1, $payload]);
    closes_clean($ws, '1 chopped');
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'split!'), split => 1);
    echoes($ws, '1 frame split at every byte', [1, 'split!']);
    $ws->send_raw(frame(opcode => 2, payload => 'x' x 300), split => 1,
                  delay => 0);
    echoes($ws, '1 16-bit length split at every byte', [2, 'x' x 300]);
    closes_clean($ws, '1 split');
}

{
    # RFC 6455 5.2 wants the shortest length from the sender only
    my $ws = ws();
    $ws->send_frame(opcode => 1, payload => 'short', len_bytes => 2);
    $ws->send_frame(opcode => 1, payload => 'short', len_bytes => 8);
    echoes($ws, '1 longer length encodings accepted', [1, 'short'],
           [1, 'short']);
    closes_clean($ws, '1 longer length');
}

{
    my $ws = ws();
    my $wire = join '', map { frame(opcode => 1, payload => "m$_") } 1 .. 500;
    $ws->send_raw($wire);
    echoes($ws, '1 500 messages in one write', map { [1, "m$_"] } 1 .. 500);
    closes_clean($ws, '1 many');
}

{
    my $ws = ws();
    $ws->send_frame(opcode => 1, payload => 'plain', mask => 0);
    fails($ws, 1002, '1 unmasked frame');
}

{
    # a frame sent right behind the handshake, before 101 came back
    my $ws = ws('/ws', after => frame(opcode => 1, payload => 'early'));
    is($ws->{status}, 101, '1 early frame: 101');
    echoes($ws, '1 frame behind the handshake', [1, 'early']);
    closes_clean($ws, '1 early');
}

# --- 2 pings and pongs -------------------------------------------------------

{
    my $ws = ws();
    $ws->ping('');
    echoes($ws, '2.1 empty ping', [10, '']);
    $ws->ping('Hello, world!');
    echoes($ws, '2.2 ping with text', [10, 'Hello, world!']);
    $ws->ping("\x00\xff\xfe\xfd\xfc\xfb\x00\xff");
    echoes($ws, '2.3 ping with bytes',
           [10, "\x00\xff\xfe\xfd\xfc\xfb\x00\xff"]);
    $ws->ping("\xfe" x 125);
    echoes($ws, '2.4 ping of 125 bytes', [10, "\xfe" x 125]);
    $ws->ping('*' x 125, split => 1, delay => 0);
    echoes($ws, '2.6 ping split at every byte', [10, '*' x 125]);
    closes_clean($ws, '2 pings');
}

{
    my $ws = ws();
    $ws->ping("\xfe" x 126);
    fails($ws, 1002, '2.5 ping of 126 bytes');
}

{
    my $ws = ws();
    $ws->pong('');
    $ws->pong('unsolicited');
    $ws->text('after pongs');
    echoes($ws, '2.7/2.8 unsolicited pongs are ignored', [1, 'after pongs']);
    $ws->pong('ping pong');
    $ws->ping('the ping');
    echoes($ws, '2.9 pong then ping', [10, 'the ping']);
    closes_clean($ws, '2 pongs');
}

{
    # several pings before the server writes: the latest one is answered
    my $ws = ws();
    $ws->send_raw(join '', map { frame(opcode => 9, payload => "p$_") }
                  1 .. 10);
    $ws->text('done');
    my @got;
    while (my $f = $ws->read_frame(5)) {
        push @got, $f;
        last if $f->{opcode} == 1;
    }
    my @pongs = map { $_->{payload} } grep { $_->{opcode} == 10 } @got;
    ok(@pongs >= 1, '2.10 ten pings at once: answered');
    is($pongs[-1], 'p10', '2.10 the last pong is for the last ping');
    my @n = map { /(\d+)/ ? $1 : 0 } @pongs;
    is_deeply(\@n, [sort { $a <=> $b } @n], '2.10 pongs in order');
    is($got[-1]{payload}, 'done', '2.10 then the echo');
    closes_clean($ws, '2.10');
}

{
    my $ws = ws();
    for my $i (1 .. 10) {
        $ws->ping("p$i", split => 1, delay => 0);
        sleep 0.02;
    }
    echoes($ws, '2.11 ten pings apart, split', map { [10, "p$_"] } 1 .. 10);
    closes_clean($ws, '2.11');
}

# --- 3 reserved bits ---------------------------------------------------------

{
    my $ws = ws();
    $ws->send_frame(opcode => 1, payload => 'rsv1', rsv => 4);
    fails($ws, 1002, '3.1 RSV1 on text');
}

{
    my $ws = ws();
    $ws->text('Hello, world!');
    echoes($ws, '3.2 echo first', [1, 'Hello, world!']);
    $ws->send_frame(opcode => 1, payload => 'rsv2', rsv => 2);
    $ws->ping('');
    fails($ws, 1002, '3.2 RSV2 on text, then a ping (no pong)');
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'Hello, world!')
                  . frame(opcode => 1, payload => 'rsv3', rsv => 3)
                  . frame(opcode => 9, payload => ''));
    fails($ws, 1002, '3.3 all in one write', before => [[1, 'Hello, world!']]);
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'Hello')
                  . frame(opcode => 1, payload => 'rsv4', rsv => 4)
                  . frame(opcode => 9, payload => ''), split => 1, delay => 0);
    fails($ws, 1002, '3.4 split at every byte', before => [[1, 'Hello']]);
}

for my $c ([2, 5, 'binary'], [9, 6, 'ping'], [8, 7, 'close']) {
    my $ws = ws();
    $ws->send_frame(opcode => $c->[0],
                    payload => $c->[0] == 8 ? pack('n', 1000) : "\xff",
                    rsv => $c->[1]);
    fails($ws, 1002, "3 RSV $c->[1] on $c->[2]");
}

# --- 4 opcodes ---------------------------------------------------------------

for my $op (3 .. 7, 11 .. 15) {
    my $ws = ws();
    $ws->text('before');
    $ws->send_frame(opcode => $op, payload => 'reserved');
    $ws->ping('');
    fails($ws, 1002, "4 reserved opcode $op", before => [[1, 'before']]);
}

# --- 5 fragmentation ---------------------------------------------------------

for my $c ([9, 'ping'], [10, 'pong']) {
    my $ws = ws();
    $ws->send_raw(frame(opcode => $c->[0], payload => 'frag', fin => 0)
                  . frame(opcode => 0, payload => 'ment'));
    fails($ws, 1002, "5.1/5.2 fragmented $c->[1]");
}

for my $split (0, 1) {
    my $how = $split ? ', split at every byte' : '';
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'fragment1', fin => 0)
                  . frame(opcode => 0, payload => 'fragment2'),
                  split => $split, delay => 0);
    echoes($ws, "5.3 text in two fragments$how", [1, 'fragment1fragment2']);

    $ws->send_raw(frame(opcode => 1, payload => 'fragment1', fin => 0)
                  . frame(opcode => 9, payload => 'between')
                  . frame(opcode => 0, payload => 'fragment2'),
                  split => $split, delay => 0);
    echoes($ws, "5.6 ping between fragments$how", [10, 'between'],
           [1, 'fragment1fragment2']);
    closes_clean($ws, "5.3 $split");
}

{
    my $ws = ws();
    for my $i (1 .. 5) {
        $ws->send_frame(opcode => $i == 1 ? 1 : 0, payload => "f$i",
                        fin => $i == 5);
        $ws->ping("p$i") if $i < 5;
        sleep 0.02;
    }
    echoes($ws, '5.19 five fragments with pings between, apart',
           (map { [10, "p$_"] } 1 .. 4), [1, 'f1f2f3f4f5']);

    $ws->send_raw(join('', map { frame(opcode => $_ == 1 ? 2 : 0,
                                       payload => chr($_), fin => $_ == 64) }
                       1 .. 64));
    echoes($ws, '5 binary in 64 one-byte fragments',
           [2, join '', map { chr } 1 .. 64]);

    $ws->send_raw(frame(opcode => 1, payload => '', fin => 0)
                  . frame(opcode => 0, payload => '', fin => 0)
                  . frame(opcode => 0, payload => ''));
    echoes($ws, '6.1.2 empty fragments', [1, '']);

    $ws->send_raw(frame(opcode => 1, payload => '', fin => 0)
                  . frame(opcode => 0, payload => 'middle', fin => 0)
                  . frame(opcode => 0, payload => ''));
    echoes($ws, '6.1.3 empty, middle, empty', [1, 'middle']);
    closes_clean($ws, '5 fragments');
}

for my $c ([1, 'FIN'], [0, 'no FIN']) {
    my $ws = ws();
    $ws->send_frame(opcode => 0, payload => 'orphan', fin => $c->[0]);
    fails($ws, 1002, "5.9/5.12 continuation ($c->[1]) without a message");
}

{
    my $ws = ws();
    $ws->text('whole');
    $ws->send_frame(opcode => 0, payload => 'orphan');
    fails($ws, 1002, '5.16 continuation after a whole message',
          before => [[1, 'whole']]);
}

for my $op (1, 2) {
    my $ws = ws();
    $ws->send_raw(frame(opcode => $op, payload => 'start', fin => 0)
                  . frame(opcode => $op, payload => 'again'));
    fails($ws, 1002, "5.15/5.17 new op$op message inside a fragmented one");
}

# --- 6 UTF-8 -----------------------------------------------------------------

my @valid = (
    [ "\x00", 'U+0000' ],
    [ "\x7f", 'U+007F' ],
    [ "\xc2\x80", 'U+0080' ],
    [ "\xdf\xbf", 'U+07FF' ],
    [ "\xe0\xa0\x80", 'U+0800' ],
    [ "\xed\x9f\xbf", 'U+D7FF' ],
    [ "\xee\x80\x80", 'U+E000' ],
    [ "\xef\xbf\xbd", 'U+FFFD' ],
    [ "\xef\xbf\xbe\xef\xbf\xbf", 'U+FFFE U+FFFF' ],
    [ "\xf0\x90\x80\x80", 'U+10000' ],
    [ "\xf4\x8f\xbf\xbf", 'U+10FFFF' ],
    [ "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 'kosme' ],
    [ "Hello-\xc2\xb5\@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1"
      . "-UTF-8!!",
      'Hello-µ@ßöäüàá-UTF-8!!' ],
);

my @invalid = (
    [ "\x80", 'lone continuation' ],
    [ "\xbf", 'lone continuation BF' ],
    [ "\xc0\x80", 'overlong U+0000' ],
    [ "\xc1\xbf", 'overlong 2 bytes' ],
    [ "\xe0\x80\xaf", 'overlong 3 bytes' ],
    [ "\xe0\x9f\xbf", 'overlong U+07FF' ],
    [ "\xf0\x80\x80\xaf", 'overlong 4 bytes' ],
    [ "\xf0\x8f\xbf\xbf", 'overlong U+FFFF' ],
    [ "\xed\xa0\x80", 'surrogate U+D800' ],
    [ "\xed\xbf\xbf", 'surrogate U+DFFF' ],
    [ "\xed\xa0\x80\xed\xb0\x80", 'surrogate pair' ],
    [ "\xf4\x90\x80\x80", 'above U+10FFFF' ],
    [ "\xf5\x80\x80\x80", 'F5' ],
    [ "\xf8\x88\x80\x80\x80", '5 bytes' ],
    [ "\xfc\x84\x80\x80\x80\x80", '6 bytes' ],
    [ "\xfe", 'FE' ],
    [ "\xff", 'FF' ],
    [ "\xc2", 'truncated 2 bytes' ],
    [ "\xe0\xa0", 'truncated 3 bytes' ],
    [ "\xf0\x90\x80", 'truncated 4 bytes' ],
    [ "\xc2\x41", 'missing continuation' ],
    [ "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
      'kosme with a surrogate (6.3.1)' ],
);

{
    my $ws = ws();
    $ws->text('');
    echoes($ws, '6.1.1 empty text', [1, '']);

    for my $v (@valid) {
        $ws->send_frame(opcode => 1, payload => $v->[0]);
        echoes($ws, "6 valid $v->[1]", [1, $v->[0]]);

        # every byte its own fragment: code points split across frames
        my @b = split //, $v->[0];
        $ws->send_raw(join '', map { frame(opcode => $_ ? 0 : 1,
                                           payload => $b[$_],
                                           fin => $_ == $#b) } 0 .. $#b);
        echoes($ws, "6 valid $v->[1], a fragment per byte", [1, $v->[0]]);
    }

    # binary messages are not text: anything goes
    $ws->binary("\xff\xfe\xed\xa0\x80");
    echoes($ws, '6 binary is not checked', [2, "\xff\xfe\xed\xa0\x80"]);
    closes_clean($ws, '6 valid');
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => "Hello-\xc2\xb5\@\xc3\x9f"),
                  split => 1, delay => 0);
    echoes($ws, '6.2 valid text split at every TCP byte',
           [1, "Hello-\xc2\xb5\@\xc3\x9f"]);
    closes_clean($ws, '6.2');
}

for my $v (@invalid) {
    for my $frag (0, 1) {
        my $ws = ws();
        if ($frag) {
            my @b = split //, $v->[0];
            $ws->send_raw(join '', map { frame(opcode => $_ ? 0 : 1,
                                               payload => $b[$_],
                                               fin => $_ == $#b) } 0 .. $#b);
        } else {
            $ws->send_frame(opcode => 1, payload => $v->[0]);
        }
        fails($ws, 1007, "6 invalid $v->[1]" . ($frag ? ', fragmented' : ''));
    }
}

{
    # fail fast: the close comes before the message could end
    my $ws = ws();
    $ws->send_frame(opcode => 1, payload => "\xce\xba\xe1\xbd\xb9\xcf\x83"
                                            . "\xf4\x90\x80\x80", fin => 0);
    fails($ws, 1007, '6.4.1 invalid in the first fragment, rest not sent');

    $ws = ws();
    my $f = frame(opcode => 1, payload => "\xce\xba\xe1\xbd\xb9\xed\xa0\x80"
                                          . ('x' x 1000));
    $ws->send_raw(substr($f, 0, 4 + 4 + 8));
    fails($ws, 1007, '6.4.2 invalid inside a frame, rest of it not sent');

    $ws = ws();
    $ws->send_frame(opcode => 1, payload => "\xce\xba\xf4", fin => 0);
    sleep 0.2;
    my $early = $ws->read_frame(0.2);
    ok(!$early, '6.4.3 a valid lead byte waits for more');
    $ws->send_frame(opcode => 0, payload => "\x90", fin => 0);
    fails($ws, 1007, '6.4.3 the continuation that breaks it');
}

# --- 7 close handling --------------------------------------------------------

{
    my $ws = ws();
    $ws->text('Hello World!');
    echoes($ws, '7.1.1 echo', [1, 'Hello World!']);
    closes_clean($ws, '7.1.1');
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 8, payload => pack('n', 1000))
                  . frame(opcode => 8, payload => pack('n', 1000)));
    my ($before, $close) = $ws->read_until_close(5);
    is($close && $close->{code}, 1000, '7.1.2 close twice: one answer');
    ok($ws->wait_eof(5), '7.1.2 TCP closed, nothing more');
}

for my $c ([9, 'ping', ''], [1, 'text', 'late'], [2, 'binary', 'late']) {
    my $ws = ws();
    $ws->send_raw(frame(opcode => 8, payload => pack('n', 1000))
                  . frame(opcode => $c->[0], payload => $c->[2]));
    my ($before, $close) = $ws->read_until_close(5);
    is(frames_desc(@$before), '', "7.1.3/4 $c->[1] after close: ignored");
    is($close && $close->{code}, 1000, "7.1.3/4 $c->[1]: close echoed");
    ok($ws->wait_eof(5), "7.1.3/4 $c->[1]: TCP closed");
}

{
    my $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'fragment1', fin => 0)
                  . frame(opcode => 8, payload => pack('n', 1000))
                  . frame(opcode => 0, payload => 'fragment2'));
    my ($before, $close) = $ws->read_until_close(5);
    is(frames_desc(@$before), '', '7.1.5 message cut by a close: no echo');
    is($close && $close->{code}, 1000, '7.1.5 close echoed');
    ok($ws->wait_eof(5), '7.1.5 TCP closed');
}

{
    my $ws = ws();
    my $big = 'BAsd7&jh23' x 6000;
    $ws->send_raw(frame(opcode => 1, payload => $big)
                  . frame(opcode => 8, payload => pack('n', 1000))
                  . frame(opcode => 9, payload => ''));
    my ($before, $close) = $ws->read_until_close(5);
    is(frames_desc(@$before), frames_desc({ opcode => 1, payload => $big }),
       '7.1.6 60 KB echoed before the close, no pong after');
    is($close && $close->{code}, 1000, '7.1.6 close echoed');
    ok($ws->wait_eof(5), '7.1.6 TCP closed');
}

{
    my $ws = ws();
    $ws->send_frame(opcode => 8, payload => '');
    my ($before, $close) = $ws->read_until_close(5);
    ok($close && $close->{payload} eq '', '7.3.1 empty close: empty answer');
    ok($ws->wait_eof(5), '7.3.1 TCP closed');
}

{
    my $ws = ws();
    $ws->send_frame(opcode => 8, payload => "\x03");
    fails($ws, 1002, '7.3.2 close with a 1-byte payload');
}

for my $reason ('', 'Hello World!', '*' x 123) {
    my $ws = ws();
    $ws->close_frame(1000, $reason);
    my ($before, $close) = $ws->read_until_close(5);
    is($close && $close->{code}, 1000,
       '7.3.3-5 close with a reason of ' . length($reason) . ' bytes');
    ok($ws->wait_eof(5), '7.3.3-5 TCP closed');
}

{
    my $ws = ws();
    $ws->close_frame(1000, '*' x 124, );
    fails($ws, 1002, '7.3.6 close payload of 126 bytes');
}

{
    my $ws = ws();
    $ws->close_frame(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                           . "\xed\xa0\x80\x65\x64\x69\x74\x65\x64");
    fails($ws, 1007, '7.5.1 close reason that is not UTF-8');
}

for my $code (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000,
              3999, 4000, 4999)
{
    my $ws = ws();
    $ws->close_frame($code);
    my ($before, $close) = $ws->read_until_close(5);
    is($close && $close->{code}, $code, "7.7 close code $code echoed");
    ok($ws->wait_eof(5), "7.7 close code $code: TCP closed");
}

for my $code (0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100,
              2000, 2999, 5000, 65535)
{
    my $ws = ws();
    $ws->close_frame($code);
    fails($ws, 1002, "7.9 invalid close code $code");
}

{
    # the client goes away without a close frame
    my $ws = ws();
    $ws->text('bye');
    echoes($ws, '7 abnormal end: echo', [1, 'bye']);
    $ws->close_socket;
}

# --- 9 limits ----------------------------------------------------------------

{
    # fail fast: the header says too much, no payload is awaited
    my $ws = ws();
    $ws->send_raw(substr(frame(opcode => 2, payload => 'x' x 65537), 0, 14));
    fails($ws, 1009, '9 one byte over 64k, refused from its header');

    $ws = ws();
    $ws->send_raw(frame(opcode => 1, payload => 'a' x 40000, fin => 0)
                  . substr(frame(opcode => 0, payload => 'b' x 25537), 0, 8));
    fails($ws, 1009, '9 fragments over 64k together');

    $ws = ws();
    $ws->send_frame(opcode => 2, payload => '', len64 => [0x80000000, 0]);
    fails($ws, 1002, '9 64-bit length with the top bit set');

    $ws = ws();
    $ws->send_frame(opcode => 2, payload => '', len64 => [0x100, 0]);
    fails($ws, 1009, '9 a terabyte announced');
}

{
    my $ws = ws('/ws-small');
    $ws->text('s' x 1000);
    echoes($ws, '9 max_message_size 1000: 1000 bytes', [1, 's' x 1000]);
    $ws->text('s' x 1001);
    fails($ws, 1009, '9 max_message_size 1000: 1001 bytes');
}

for my $size (64, 256, 1024, 4096) {
    my $ws = ws();
    my $msg = join '', map { chr(32 + $_ % 90) } 1 .. 65536;
    my @parts = unpack("(a$size)*", $msg);
    $ws->send_raw(join '', map { frame(opcode => $_ ? 0 : 1,
                                       payload => $parts[$_],
                                       fin => $_ == $#parts) } 0 .. $#parts);
    echoes($ws, "9 64 KB text in $size-byte fragments", [1, $msg]);
    closes_clean($ws, "9 fragments $size");
}

for my $chop (64, 4096) {
    my $ws = ws();
    my $msg = join '', map { chr(($_ * 7) % 256) } 1 .. 65536;
    $ws->send_raw(frame(opcode => 2, payload => $msg), chunk => $chop,
                  delay => 0);
    echoes($ws, "9 64 KB binary sent in $chop-byte chops", [2, $msg]);
    closes_clean($ws, "9 chops $chop");
}

{
    my @c = map { ws() } 1 .. 50;
    $c[$_]->text("c$_") for 0 .. $#c;
    my $ok = 0;
    for (0 .. $#c) {
        my $f = $c[$_]->read_frame(5);
        $ok++ if $f && $f->{payload} eq "c$_";
    }
    is($ok, 50, '9 50 connections at once echo');
    $_->close_frame(1000) for @c;
    my $closed = grep { my ($b, $cl) = $_->read_until_close(5);
                        $cl && $_->wait_eof(5) } @c;
    is($closed, 50, '9 50 connections closed');
}

# --- the handshake -----------------------------------------------------------

sub refused {
    my ($ws, $status, $name) = @_;
    is($ws->{status}, $status, "handshake $name: $status");
    ok(!exists $ws->{headers}{'sec-websocket-accept'},
       "handshake $name: no Sec-WebSocket-Accept");
    like($ws->{body} // '', qr/^\{"error":/, "handshake $name: JSON error");
}

{
    my $ws = ws();
    is($ws->{status}, 101, 'handshake: 101');
    ok($ws->accept_ok, 'handshake: Sec-WebSocket-Accept is right');
    like($ws->{head}, qr/^Connection: upgrade\r$/mi, 'handshake: Connection');
    like($ws->{head}, qr/^Upgrade: websocket\r$/mi, 'handshake: Upgrade');
    unlike($ws->{head}, qr/Content-Length|Transfer-Encoding/i,
           'handshake: no body framing');
    closes_clean($ws, 'handshake');

    # the RFC's own example
    $ws = ws('/ws', key => 'dGhlIHNhbXBsZSBub25jZQ==');
    is($ws->{headers}{'sec-websocket-accept'}, 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=',
       'handshake: the accept value of RFC 6455 section 1.3');
    closes_clean($ws, 'RFC key');

    $ws = ws('/ws', headers => { Upgrade => 'WebSocket',
                                 Connection => 'keep-alive, Upgrade' });
    is($ws->{status}, 101, 'handshake: tokens in any case, in lists');
    closes_clean($ws, 'tokens');

    $ws = ws('/ws', headers => {
        'Sec-WebSocket-Extensions' =>
            'permessage-deflate; client_max_window_bits',
        'Sec-WebSocket-Protocol' => 'chat, superchat' });
    is($ws->{status}, 101, 'handshake: extension and subprotocol offers');
    ok(!exists $ws->{headers}{'sec-websocket-extensions'},
       'handshake: permessage-deflate is not negotiated');
    ok(!exists $ws->{headers}{'sec-websocket-protocol'},
       'handshake: no subprotocol chosen');
    $ws->send_frame(opcode => 1, payload => 'compressed?', rsv => 4);
    fails($ws, 1002, 'handshake: RSV1 without permessage-deflate');
}

refused(ws('/ws', key => 'short'), 400, 'bad key: short');
refused(ws('/ws', key => '!!!!!!!!!!!!!!!!!!!!!!=='), 400,
        'bad key: not base64');
refused(ws('/ws', key => 'AAAAAAAAAAAAAAAAAAAAAAAA'), 400, 'bad key: 18 bytes');
refused(ws('/ws', key => undef), 400, 'no key');
refused(ws('/ws', extra_headers => [['Sec-WebSocket-Key',
                                     'dGhlIHNhbXBsZSBub25jZQ==']]),
        400, 'two keys');

{
    my $ws = ws('/ws', headers => { 'Sec-WebSocket-Version' => 8 });
    refused($ws, 426, 'version 8');
    is($ws->{headers}{'sec-websocket-version'}, '13',
       'handshake version 8: Sec-WebSocket-Version: 13');

    $ws = ws('/ws', headers => { 'Sec-WebSocket-Version' => undef });
    refused($ws, 426, 'no version');

    $ws = ws('/ws', headers => { Upgrade => undef });
    refused($ws, 426, 'no Upgrade');
    is($ws->{headers}{upgrade}, 'websocket', 'handshake no Upgrade: says so');

    $ws = ws('/ws', headers => { Connection => 'keep-alive' });
    refused($ws, 426, 'no upgrade in Connection');
}

refused(ws('/ws', method => 'POST'), 405, 'POST');
refused(ws('/ws', version => 'HTTP/1.0'), 400, 'HTTP/1.0');
refused(ws('/ws', headers => { 'Content-Length' => 4 }, after => 'body'),
        400, 'with a body');

{
    my $own = 'http://127.0.0.1:' . $t->port;

    my $ws = ws('/ws', headers => { Origin => 'http://evil.example' });
    refused($ws, 403, 'foreign Origin');

    $ws = ws('/ws', headers => { Origin => $own });
    is($ws->{status}, 101, 'handshake: own Origin accepted');
    closes_clean($ws, 'own Origin');

    $ws = ws('/ws', headers => { Origin => 'null' });
    refused($ws, 403, 'Origin null');
}

# platform_auth decides before the handler: no 101 without a session

{
    my $ws = ws('/ws-auth');
    refused($ws, 401, 'platform_auth without a session');
    unlike($ws->{head}, qr/^Upgrade:/mi, 'platform_auth 401: no Upgrade');

    $ws = ws('/ws-auth', headers => { Cookie => 'platform_session=forged' });
    refused($ws, 401, 'platform_auth with a forged cookie');

    my $claims = 'u=7;e=0;x=' . int(time + 3600) . ';f=0;r=participant';
    my $r = $t->get("/issue?c=$claims");
    my ($cookie) = ($r->{headers}{'set-cookie'} // '')
        =~ /^(platform_session=[^;]*)/;
    ok($cookie, 'a session for user 7') or diag(explain($r));

    $ws = ws('/ws-auth', headers => { Cookie => $cookie });
    is($ws->{status}, 101, 'platform_auth with a session: 101');
    $ws->text('as user 7');
    echoes($ws, 'platform_auth: echo', [1, 'as user 7']);
    closes_clean($ws, 'platform_auth');
    $ws->close_socket;     # the log line is written when TCP is done

    my $deadline = time + 5;
    my $log = '';
    while (time < $deadline) {
        $log = Test::Platform::_slurp("$dir/ws.log") // '';
        last if $log =~ /101/;
        sleep 0.05;
    }
    like($log, qr{^/ws-auth 101 user=7$}m,
         'the request lives on: $platform_user logged at the end');
    like($log, qr{^/ws-auth 401 user=-$}m, 'the refusal logged as 401');
}

# --- keepalive: pings and the idle timeout -----------------------------------

{
    my %c = map { $_ => { ws => ws('/ws-ping'), frames => [] } }
            qw(answering silent mute);
    my $t0 = time;

    # one loop serves all three for 3 s: "answering" answers every ping,
    # "silent" answers nothing but the server's close, "mute" nothing at all
    while (time - $t0 < 3) {
        for my $name (sort keys %c) {
            my $x = $c{$name};
            next if $x->{eof_at};
            if ($x->{close_at} && $x->{ws}{eof}) {
                $x->{eof_at} = time;
                next;
            }
            my $f = $x->{ws}->read_frame(0.01);
            if (!$f) {
                $x->{eof_at} = time if $x->{ws}{eof};
                next;
            }
            push @{$x->{frames}}, $f;
            if ($f->{opcode} == 9 && $name eq 'answering') {
                $x->{ws}->pong($f->{payload});
            } elsif ($f->{opcode} == 8) {
                $x->{close_at} = time;
                $x->{close} = $f;
                $x->{ws}->close_frame(1001) if $name eq 'silent';
            }
        }
    }

    my $pings = grep { $_->{opcode} == 9 } @{$c{answering}{frames}};
    ok($pings >= 5, "pings every 300ms to a quiet client ($pings in 3s)");
    ok(!$c{answering}{close}, 'a client that answers pings stays open');
    # the server keeps pinging every 300ms: a ping may come first
    $c{answering}{ws}->text('still here');
    my $f;
    while (($f = $c{answering}{ws}->read_frame(5)) && $f->{opcode} == 9) {
        $c{answering}{ws}->pong($f->{payload});
    }
    ok($f && $f->{opcode} == 1 && $f->{payload} eq 'still here'
       && $f->{fin} && !$f->{masked}, 'and is served')
        or diag('got ' . frames_desc($f));
    closes_clean($c{answering}{ws}, 'pinged', pings => 1);

    for my $name ('silent', 'mute') {
        my $x = $c{$name};
        my @p = grep { $_->{opcode} == 9 && $_->{payload} eq '' }
                @{$x->{frames}};
        ok(@p >= 2, "$name: pinged (" . scalar(@p) . ')');
        is($x->{close} && $x->{close}{code}, 1001, "$name: close 1001");
        is($x->{close} && $x->{close}{reason}, 'idle timeout',
           "$name: reason idle timeout");
        my $at = ($x->{close_at} // 0) - $t0;
        ok($at > 0.8 && $at < 1.8,
           sprintf("$name: closed after the 1s idle timeout (%.2fs)", $at));
        ok($x->{eof_at}, "$name: TCP closed");
    }

    my $w = ($c{silent}{eof_at} // 9) - ($c{silent}{close_at} // 0);
    ok($w < 0.5, sprintf('silent: TCP closed once it answered (%.2fs)', $w));
    $w = ($c{mute}{eof_at} // 9) - ($c{mute}{close_at} // 0);
    ok($w > 0.6 && $w < 1.8,
       sprintf('mute: dropped after the 1s close timeout (%.2fs)', $w));
}

# --- a slow consumer next to a fast one -------------------------------------

{
    my $slow = ws('/ws', port => $t->port2, rcvbuf => 4096);
    my $fast = ws('/ws', port => $t->port2);

    my $msg = 'S' x 16384;
    my $wire = join '', map { frame(opcode => 2, payload => $msg) } 1 .. 40;

    # it sends but does not read: its echoes pile up in the server
    $slow->send_raw($wire, timeout => 2);

    $fast->text('fast one');
    echoes($fast, 'a fast client on the same worker is served',
           [1, 'fast one']);

    my ($before, $close) = $slow->read_until_close(10);
    is($close && $close->{code}, 1008, 'the slow client: close 1008');
    my $whole = grep { $_->{opcode} == 2 && $_->{payload} eq $msg } @$before;
    is($whole, scalar @$before,
       "the slow client got whole echoes before it ($whole)");
    ok($whole < 40, 'and not all of them');
    ok($slow->wait_eof(5), 'the slow client: TCP closed');

    $fast->text('still fast');
    echoes($fast, 'the fast client still works', [1, 'still fast']);
    closes_clean($fast, 'fast');
}

# --- statistics --------------------------------------------------------------

{
    my $m = $t->metrics('/status', fresh => 1);
    my $s = sub { $t->sample($m, @_) // -1 };

    is($m->{_TYPE}{platform_websocket_connections}, 'gauge', 'status: gauge');
    is($s->('platform_websocket_connections'), 0, 'status: none open now');
    ok($s->('platform_websocket_handshakes_total', result => 'accepted') > 200,
       'status: handshakes accepted');
    ok($s->('platform_websocket_handshakes_total', result => 'refused') >= 14,
       'status: handshakes refused');
    ok($s->('platform_websocket_messages_total', direction => 'in') > 500,
       'status: messages in');
    ok($s->('platform_websocket_messages_total', direction => 'out') > 500,
       'status: messages out');
    ok($s->('platform_websocket_closed_total', reason => 'protocol_error') > 50,
       'status: closed for protocol errors');
    ok($s->('platform_websocket_closed_total', reason => 'too_big') >= 4,
       'status: closed as too big');
    is($s->('platform_websocket_closed_total', reason => 'slow_consumer'), 1,
       'status: one slow consumer');
    is($s->('platform_websocket_closed_total', reason => 'idle'), 2,
       'status: two idle');
    is($s->('platform_websocket_closed_total', reason => 'abnormal'), 1,
       'status: one went away without a close');
    ok($s->('platform_websocket_closed_total', reason => 'normal') > 100,
       'status: normal closes');
}

# --- reload and quit: 1001, bounded, no alert --------------------------------

{
    my $answering = ws();
    my $silent = ws();
    $answering->text('before reload');
    echoes($answering, 'reload: open', [1, 'before reload']);

    my %old = map { $_ => 1 } $t->worker_pids;
    kill 'HUP', $t->nginx_pid;

    my ($before, $close) = $answering->read_until_close(5);
    is($close && $close->{code}, 1001, 'reload: close 1001');
    is($close && $close->{reason}, 'server shutting down',
       'reload: reason says why');
    my $t0 = time;
    $answering->close_frame(1001);
    ok($answering->wait_eof(2), 'reload: TCP closed after the answer');
    ok(time - $t0 < 1, 'reload: at once');
    $answering->close_socket;

    ($before, $close) = $silent->read_until_close(5);
    is($close && $close->{code}, 1001, 'reload: the silent client too');
    ok($silent->wait_eof(5), 'reload: silent client dropped');
    my $waited = time - $t0;
    ok($waited > 1.2 && $waited < 4,
       sprintf('reload: after platform_websocket_shutdown_timeout (%.2fs)',
               $waited));

    my $deadline = time + 10;
    sleep 0.05 while time < $deadline && grep { kill 0, $_ } keys %old;
    ok(!(grep { kill 0, $_ } keys %old), 'reload: the old worker exited');

    my $ws;
    $deadline = time + 5;
    while (time < $deadline) {
        $ws = eval { ws() };
        last if $ws && $ws->{status} == 101;
        sleep 0.05;
    }
    is($ws && $ws->{status}, 101, 'reload: the new worker answers');
    closes_clean($ws, 'after reload');
}

{
    # quit: a client in a child process answers the close; one here is silent
    my $silent = ws();
    my $answering = ws();

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        my ($before, $close) = $answering->read_until_close(10);
        my $ok = $close && $close->{code} == 1001;
        $answering->close_frame(1001) if $ok;
        $ok &&= $answering->wait_eof(5);
        $answering->close_socket;
        POSIX::_exit($ok ? 0 : 1);
    }
    undef $answering;

    my $t0 = time;
    $t->stop;
    my $took = time - $t0;

    waitpid($pid, 0);
    is($? >> 8, 0, 'quit: the answering client got 1001 and a clean end');

    my ($before, $close) = $silent->read_until_close(2);
    is($close && $close->{code}, 1001, 'quit: the silent client got 1001');
    ok($silent->wait_eof(2), 'quit: and was dropped');
    ok($took < 5, sprintf('quit: nginx exited in %.2fs', $took));
}

done_testing;
