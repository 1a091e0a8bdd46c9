package Test::Platform::WebSocket;

# A raw WebSocket client for conformance tests: it sends exactly the bytes
# it is told to (bad frames included), as one write, split at every byte or
# in chunks, and reads what the server sends frame by frame, checking that
# the server's frames are unmasked and noting when the server closes TCP.
#
#   my $ws = Test::Platform::WebSocket->connect(port => $t->port,
#       path => '/ws', headers => { Origin => '...' }, rcvbuf => 4096);
#   $ws->{status}, $ws->{headers}{'sec-websocket-accept'}, $ws->{body}
#   $ws->accept_ok          Sec-WebSocket-Accept matches the key
#
#   frame(opcode => 1, payload => 'x', fin => 1, rsv => 0, mask => 1,
#         len_bytes => 0|2|8, len64 => [hi, lo])       bytes of one frame
#   $ws->send_raw($bytes, split => 1, delay => 0.001, chunk => N,
#                 timeout => 10)   0 when the server stopped taking bytes
#   $ws->send_frame(%frame_options, split => 1)
#   $ws->text($s), $ws->binary($b), $ws->ping($p), $ws->pong($p),
#   $ws->close_frame($code, $reason)                    (all masked)
#
#   $ws->read_frame($timeout)   {opcode, fin, rsv, masked, payload, code,
#                               reason} or undef (timeout, or EOF: $ws->{eof})
#   $ws->read_until_close($timeout)   (\@frames_before, $close_frame)
#   $ws->wait_eof($timeout)     1 when the server closed TCP (and sent
#                               nothing more), 0 on timeout or extra data
#
# Writes never raise SIGPIPE: a server that closed is noted in
# $ws->{write_error}.

use strict;
use warnings;

use Digest::SHA qw(sha1_base64);
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use IO::Handle;
use IO::Select;
use MIME::Base64 qw(encode_base64);
use Socket qw(AF_INET SOCK_STREAM IPPROTO_TCP TCP_NODELAY SOL_SOCKET
              SO_RCVBUF inet_aton sockaddr_in);
use Time::HiRes qw(time sleep);

use Exporter qw(import);
our @EXPORT_OK = qw(frame);

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

sub _random_bytes {
    my ($n) = @_;
    return join '', map { chr int rand 256 } 1 .. $n;
}

sub connect {
    my ($class, %o) = @_;

    my $self = bless { buf => '', eof => 0 }, $class;

    socket(my $s, AF_INET, SOCK_STREAM, 0) or die "socket: $!\n";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) if $o{rcvbuf};
    CORE::connect($s, sockaddr_in($o{port}, inet_aton('127.0.0.1')))
        or die "connect 127.0.0.1:$o{port}: $!\n";
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    binmode $s;
    IO::Handle::blocking($s, 0);
    $self->{sock} = $s;

    my $key = exists $o{key} ? $o{key} : encode_base64(_random_bytes(16), '');
    $self->{key} = $key;

    my @h = (
        [ Host => "127.0.0.1:$o{port}" ],
        [ Upgrade => 'websocket' ],
        [ Connection => 'Upgrade' ],
        [ 'Sec-WebSocket-Key' => $key ],
        [ 'Sec-WebSocket-Version' => 13 ],
    );

    # headers => { Name => value } replaces (undef removes); extra_headers
    # => [[Name, value]...] adds lines as they are (duplicates too)
    for my $name (sort keys %{$o{headers} || {}}) {
        @h = grep { lc $_->[0] ne lc $name } @h;
        push @h, [ $name => $o{headers}{$name} ]
            if defined $o{headers}{$name};
    }
    push @h, @{$o{extra_headers} || []};

    my $method = $o{method} // 'GET';
    my $version = $o{version} // 'HTTP/1.1';
    my $req = "$method " . ($o{path} // '/') . " $version\r\n"
            . join('', map { "$_->[0]: $_->[1]\r\n" }
                       grep { defined $_->[1] } @h) . "\r\n"
            . ($o{after} // '');

    $self->send_raw($req);
    $self->_read_head($o{timeout} // 5);

    return $self;
}

sub _read_head {
    my ($self, $timeout) = @_;

    my $deadline = time + $timeout;
    while ($self->{buf} !~ /\r\n\r\n/) {
        $self->_fill($deadline - time) or last;
    }

    my $i = index($self->{buf}, "\r\n\r\n");
    die "no response head from the server\n" if $i < 0;

    my $head = substr($self->{buf}, 0, $i + 4, '');
    $self->{head} = $head;

    my ($status_line, @lines) = split /\r\n/, $head;
    ($self->{status}) = $status_line =~ m{^HTTP/1\.\d (\d{3})};
    $self->{status} //= 0;

    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
        push @{$self->{header_list}}, [ $k, $v ];
        $self->{headers}{lc $k} = $v;
    }

    if ($self->{status} != 101) {
        my $len = $self->{headers}{'content-length'} // 0;
        while (length $self->{buf} < $len) {
            $self->_fill($deadline - time) or last;
        }
        $self->{body} = substr($self->{buf}, 0, $len, '');
    }
}

sub accept_ok {
    my ($self) = @_;
    my $want = sha1_base64($self->{key} . $GUID) . '=';
    return ($self->{headers}{'sec-websocket-accept'} // '') eq $want;
}

# Reads what is there into buf; 0 on EOF or timeout.
sub _fill {
    my ($self, $timeout) = @_;

    return 0 if $self->{eof};
    $timeout = 0 if $timeout < 0;

    my $sel = IO::Select->new($self->{sock});
    return 0 unless $sel->can_read($timeout);

    my $n = sysread($self->{sock}, my $data, 65536);
    if (!defined $n) {
        return 1 if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
        $self->{eof} = 1;
        $self->{reset} = "$!";
        return 0;
    }
    if ($n == 0) {
        $self->{eof} = 1;
        return 0;
    }

    $self->{buf} .= $data;
    $self->{received} += $n;
    return 1;
}

# ---------------------------------------------------------------- sending

sub frame {
    my (%o) = @_;

    my $payload = $o{payload} // '';
    utf8::encode($payload) if utf8::is_utf8($payload);

    my $len = length $payload;
    my $b0 = (($o{fin} // 1) ? 0x80 : 0) | ((($o{rsv} // 0) & 7) << 4)
           | ($o{opcode} & 0x0f);
    my $masked = $o{mask} // 1;
    my $m = $masked ? 0x80 : 0;

    my $form = $o{len_bytes} // ($len < 126 ? 0 : $len < 65536 ? 2 : 8);
    my $hdr;

    if ($o{len64}) {
        $hdr = pack('CCNN', $b0, $m | 127, @{$o{len64}});
    } elsif ($form == 0) {
        $hdr = pack('CC', $b0, $m | $len);
    } elsif ($form == 2) {
        $hdr = pack('CCn', $b0, $m | 126, $len);
    } else {
        $hdr = pack('CCNN', $b0, $m | 127, int($len / 2**32), $len % 2**32);
    }

    return $hdr . $payload unless $masked;

    my $key = $o{key} // _random_bytes(4);
    my $stream = substr($key x (int($len / 4) + 1), 0, $len);

    return $hdr . $key . ($payload ^ $stream);
}

sub send_raw {
    my ($self, $bytes, %o) = @_;

    local $SIG{PIPE} = 'IGNORE';

    my $step = $o{split} ? 1 : ($o{chunk} || length($bytes) || 1);
    my $deadline = time + ($o{timeout} // 10);
    my $sel = IO::Select->new($self->{sock});

    for (my $i = 0; $i < length $bytes; $i += $step) {
        my $piece = substr($bytes, $i, $step);
        while (length $piece) {
            my $n = syswrite($self->{sock}, $piece);
            if (!defined $n) {
                next if $! == EINTR;
                if ($! == EAGAIN || $! == EWOULDBLOCK) {
                    my $left = $deadline - time;
                    if ($left <= 0) {
                        $self->{write_error} = 'timeout';
                        return 0;
                    }
                    $sel->can_write($left);
                    next;
                }
                $self->{write_error} = "$!";
                return 0;
            }
            substr($piece, 0, $n, '');
        }
        sleep($o{delay} // 0.001) if $step < length $bytes && ($o{split}
                                                              || $o{delay});
    }

    return 1;
}

sub send_frame {
    my ($self, %o) = @_;
    my %send = map { $_ => delete $o{$_} } grep { exists $o{$_} }
               qw(split chunk delay);
    return $self->send_raw(frame(%o), %send);
}

sub _send_op {
    my ($self, $opcode, $payload, %o) = @_;
    return $self->send_frame(opcode => $opcode, payload => $payload // '',
                             %o);
}

sub text   { my $s = shift; $s->_send_op(1, @_) }
sub binary { my $s = shift; $s->_send_op(2, @_) }
sub ping   { my $s = shift; $s->_send_op(9, @_) }
sub pong   { my $s = shift; $s->_send_op(10, @_) }

sub close_frame {
    my ($self, $code, $reason, %o) = @_;
    my $payload = defined $code ? pack('n', $code) : '';
    if (defined $reason) {
        utf8::encode($reason) if utf8::is_utf8($reason);
        $payload .= $reason;
    }
    return $self->send_frame(opcode => 8, payload => $payload, %o);
}

# ---------------------------------------------------------------- reading

sub read_frame {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);

    for (;;) {
        my $f = $self->_parse;
        return $f if $f;
        $self->_fill($deadline - time) or return undef;
    }
}

sub _parse {
    my ($self) = @_;

    my $b = \$self->{buf};
    return undef if length $$b < 2;

    my ($b0, $b1) = unpack('CC', $$b);
    my $len = $b1 & 0x7f;
    my $masked = $b1 & 0x80 ? 1 : 0;
    my $off = 2;

    if ($len == 126) {
        return undef if length $$b < 4;
        $len = unpack('n', substr($$b, 2, 2));
        $off = 4;
    } elsif ($len == 127) {
        return undef if length $$b < 10;
        my ($hi, $lo) = unpack('NN', substr($$b, 2, 8));
        $len = $hi * 2**32 + $lo;
        $off = 10;
    }

    my $key;
    if ($masked) {
        return undef if length $$b < $off + 4;
        $key = substr($$b, $off, 4);
        $off += 4;
    }

    return undef if length $$b < $off + $len;

    my $payload = substr($$b, $off, $len);
    substr($$b, 0, $off + $len, '');

    if ($masked) {
        $payload ^= substr($key x (int($len / 4) + 1), 0, $len);
    }

    my $f = {
        fin     => $b0 & 0x80 ? 1 : 0,
        rsv     => ($b0 >> 4) & 7,
        opcode  => $b0 & 0x0f,
        masked  => $masked,
        payload => $payload,
        header_len => $off,
    };

    if ($f->{opcode} == 8) {
        if (length $payload >= 2) {
            $f->{code} = unpack('n', $payload);
            $f->{reason} = substr($payload, 2);
        } else {
            $f->{code} = undef;
            $f->{reason} = '';
        }
    }

    return $f;
}

# Frames up to the server's close frame: (\@before, $close or undef).
sub read_until_close {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);
    my @before;

    while (my $f = $self->read_frame($deadline - time)) {
        return (\@before, $f) if $f->{opcode} == 8;
        push @before, $f;
    }

    return (\@before, undef);
}

# 1 when the server closes TCP within the time and sends nothing more.
sub wait_eof {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);
    my $had = length $self->{buf};

    while (!$self->{eof}) {
        last if time >= $deadline;
        $self->_fill($deadline - time);
    }

    return 0 if length $self->{buf} > $had;
    return $self->{eof} ? 1 : 0;
}

sub close_socket {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
    delete $self->{sock};
}

sub DESTROY { $_[0]->close_socket }

1;
