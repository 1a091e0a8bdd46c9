package LiftTest;

# Helpers shared by the lift telemetry tests (t/120-*.t ... t/123-*.t):
# a staff session with the second factor, an organisation with a building
# and lifts, enrolment of a lift through the device endpoints, a device
# token minted with the key file (for tests that are not about enrolment),
# and a small MessagePack encoder (Debian's perl has none).

use strict;
use warnings;

use Digest::SHA qw(hmac_sha1 hmac_sha256);
use JSON::PP;
use MIME::Base64 qw(encode_base64url);
use Time::HiRes qw(time);

use Exporter 'import';
our @EXPORT_OK = qw(staff_session make_org enrol mint_token msgpack
                    now_ms);

my $json = JSON::PP->new->canonical;

sub now_ms { int(time * 1000) }

sub _totp {
    my ($key, $step) = @_;
    my $h = hmac_sha1(pack('NN', int($step / 2**32), $step % 2**32), $key);
    my $o = ord(substr($h, 19, 1)) & 15;
    return sprintf '%06d', (unpack('N', substr($h, $o, 4)) & 0x7fffffff)
                           % 1_000_000;
}

# A session cookie of EMAIL as staff of ORG, with the second factor.
sub staff_session {
    my ($t, $email, $org) = @_;
    my $origin = 'http://127.0.0.1:' . $t->port;

    $t->sign_in($email);
    my $q = $t->sql_quote($email);
    $t->psql("INSERT INTO auth.memberships (user_id, role, org_id) "
             . "SELECT id, 'staff', $org FROM auth.users WHERE email = $q");
    my $cookie = $t->sign_in($email);

    my %h = (Cookie => "platform_session=$cookie", Origin => $origin);
    my $r = $t->req('POST', '/api/auth/totp/enrol', headers => \%h,
                    body => '{}');
    die "totp enrol: $r->{status} $r->{content}\n" if $r->{status} != 200;

    my $key = pack 'H*', $t->psql("SELECT encode(totp_secret, 'hex') "
                                  . "FROM auth.users WHERE email = $q");
    $r = $t->req('POST', '/api/auth/totp/verify', headers => \%h,
                 body => $json->encode({ code => _totp($key, int(time / 30)) }));
    die "totp verify: $r->{status} $r->{content}\n" if $r->{status} != 200;

    return scalar $t->session_cookie($r);
}

# An organisation named NAME: its id.
sub make_org {
    my ($t, $name) = @_;
    return $t->psql('INSERT INTO app.organisations (name) VALUES ('
                    . $t->sql_quote($name) . ') RETURNING id');
}

# The token for (LIFT, GENERATION) under the key in FILE.
sub mint_token {
    my ($file, $lift, $gen) = @_;
    open(my $fh, '<:raw', $file) or die "$file: $!\n";
    local $/;
    my $key = <$fh>;
    close $fh;
    my $m = pack('Q>N', $lift, $gen);
    return 'lt1.' . encode_base64url($m . hmac_sha256('lift-token-v1' . $m,
                                                      $key));
}

# Enrols a lift through the device endpoints: the access token.
sub enrol {
    my ($t, $cookie, $org, $lift, $serial) = @_;
    my $origin = 'http://127.0.0.1:' . $t->port;

    my $r = $t->req('POST', '/api/devices/authorize',
                    body => $json->encode({ serial => $serial }));
    die "authorize: $r->{status} $r->{content}\n" if $r->{status} != 200;
    my $a = $json->decode($r->{content});

    $r = $t->req('POST', "/api/lift-orgs/$org/devices/approve",
                 headers => { Cookie => "platform_session=$cookie",
                              Origin => $origin },
                 body => $json->encode({ user_code => $a->{user_code},
                                         lift => $lift + 0 }));
    die "approve: $r->{status} $r->{content}\n" if $r->{status} != 200;

    $r = $t->req('POST', '/api/devices/token',
                 body => $json->encode({ device_code => $a->{device_code} }));
    die "token: $r->{status} $r->{content}\n" if $r->{status} != 200;

    return $json->decode($r->{content})->{access_token};
}

# MessagePack of a Perl value: hashes (keys sorted), arrays, undef, and
# scalars: integers as integers, other numbers as float 64, the rest as
# strings.  \1 / \0 for booleans.
sub msgpack {
    my ($v) = @_;

    if (!defined $v) {
        return "\xc0";
    }
    if (ref $v eq 'HASH') {
        my @k = sort keys %$v;
        my $n = @k;
        my $h = $n < 16 ? chr(0x80 | $n) : pack('Cn', 0xde, $n);
        return $h . join('', map { msgpack("$_") . msgpack($v->{$_}) } @k);
    }
    if (ref $v eq 'ARRAY') {
        my $n = @$v;
        my $h = $n < 16 ? chr(0x90 | $n)
              : $n < 65536 ? pack('Cn', 0xdc, $n) : pack('CN', 0xdd, $n);
        return $h . join('', map { msgpack($_) } @$v);
    }
    if (ref $v eq 'SCALAR') {
        return $$v ? "\xc3" : "\xc2";
    }
    if (ref $v eq 'LiftTest::Str') {
        $v = $$v;
    } elsif ($v =~ /^-?(?:0|[1-9][0-9]{0,17})$/) {
        return $v >= 0 ? ($v < 128 ? chr($v) : pack('CQ>', 0xcf, $v))
                       : ($v >= -32 ? pack('c', $v) : pack('Cq>', 0xd3, $v));
    } elsif ($v =~ /^-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?$/) {
        return pack('Cd>', 0xcb, $v);
    }
    my $len = length $v;
    return ($len < 32 ? chr(0xa0 | $len)
          : $len < 256 ? pack('CC', 0xd9, $len) : pack('Cn', 0xda, $len))
           . $v;
}

1;
