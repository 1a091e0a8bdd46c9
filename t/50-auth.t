#!/usr/bin/perl

# Sign-in end to end: magic link requested, mailed (read from the jobs
# table), confirmed by POST; the sealed session cookie opens /api/me; links
# work once and expire; known and unknown addresses look the same; rate
# limits answer 429 + Retry-After; logout and a logout on another host (the
# epoch poll) end every session; tampered cookies and cookies sealed with
# another key are refused; key rotation; roles and organisations; TOTP for
# staff; the Origin check.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Digest::SHA qw(hmac_sha1);
use Time::HiRes qw(sleep time);

# Two workers: a logout answered by one must end the session in the other.
my $t = Test::Platform->new(workers => 2);
my $dir = $t->testdir;

$t->key_file('session.key');
$t->key_file('new.key');

$t->psql(<<'EOF');
-- What the identity variables say, for the access tests.
CREATE FUNCTION api.t_whoami(user_id bigint, role text, org text,
                             roles text, mfa text)
RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('user', user_id, 'role', role, 'org', org,
                             'roles', roles, 'mfa', mfa)
$$;
EOF

my $conf = <<'EOF';
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%KEYS%%;
    platform_session_secure off;
    platform_session_epoch_poll 1s;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;

        location = /api/auth/link {
            platform_query POST api.auth_request_link(
                body => $platform_body::jsonb, token => $platform_random,
                client_ip => $remote_addr,
                base_url => http://127.0.0.1:%%PORT%%,
                per_email => 3::int, per_ip => 1000::int);
        }

        # The per-address limit, with the address from a header.
        location = /api/auth/link-ip {
            platform_query POST api.auth_request_link(
                body => $platform_body::jsonb, token => $platform_random,
                client_ip => $http_x_test_ip,
                base_url => http://127.0.0.1:%%PORT%%,
                per_email => 100::int, per_ip => 2::int);
        }

        location = /api/auth/confirm {
            platform_query POST api.auth_confirm(
                body => $platform_body::jsonb, client_ip => $remote_addr,
                user_agent => $http_user_agent);
        }

        location = /api/auth/logout {
            platform_auth any;
            platform_query POST api.auth_logout($platform_user::bigint);
        }

        location = /api/me {
            platform_auth any;
            platform_query GET api.me($platform_user::bigint,
                                      $platform_mfa::boolean);
        }

        location = /api/auth/totp/enrol {
            platform_auth any;
            platform_query POST api.totp_enrol($platform_user::bigint,
                                               $platform_random,
                                               $platform_mfa::boolean);
        }

        location = /api/auth/totp/verify {
            platform_auth any;
            platform_query POST api.totp_verify($platform_user::bigint,
                                                $platform_body);
        }

        location ~ ^/api/orgs/(\d+)/whoami$ {
            platform_auth organiser org=$1;
            platform_query GET api.t_whoami($platform_user::bigint,
                $platform_role, $platform_org, $platform_roles, $platform_mfa);
        }

        location = /api/staff/whoami {
            platform_auth staff;
            platform_query GET api.t_whoami($platform_user::bigint,
                $platform_role, $platform_org, $platform_roles, $platform_mfa);
        }

        location = /api/admin/whoami {
            platform_auth admin;
            platform_query GET api.t_whoami($platform_user::bigint,
                $platform_role, $platform_org, $platform_roles, $platform_mfa);
        }

        location = /api/whoami {
            platform_auth optional;
            platform_query GET api.t_whoami($platform_user::bigint,
                $platform_role, $platform_org, $platform_roles, $platform_mfa);
        }
    }
EOF

sub set_keys {
    my (@keys) = @_;
    (my $c = $conf) =~ s/%%KEYS%%/join ' ', map { "$dir\/$_" } @keys/e;
    $t->http_conf($c);
}

set_keys('session.key');
$t->run;

my $port = $t->port;
my $origin = "http://127.0.0.1:$port";

# ------------------------------------------------------------------ helpers

sub body_of { $t->json($_[0]) || {} }

sub post {
    my ($path, $body, %o) = @_;
    my %h = %{$o{headers} || {}};
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    $h{Origin} = $origin if defined $o{cookie} && !exists $h{Origin};
    delete $h{Origin} unless defined $h{Origin};
    return $t->req('POST', $path, headers => \%h,
                   body => ref $body ? JSON::PP->new->canonical->encode($body)
                                     : $body);
}

sub get {
    my ($path, %o) = @_;
    my %h;
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    return $t->get($path, headers => \%h);
}

require JSON::PP;

sub token_of {
    my ($link) = @_;
    return ($link // '') =~ m{^\Q$origin\E/confirm\.html#token=([A-Za-z0-9_-]{43})$}
           ? $1 : undef;
}

sub user_id {
    my ($email) = @_;
    return $t->psql("SELECT id FROM auth.users WHERE email = "
                    . $t->sql_quote($email));
}

# TOTP (RFC 6238, SHA1, 6 digits, 30 s) from a base32 secret.
sub base32_decode {
    my ($s) = @_;
    $s = uc $s;
    $s =~ tr/A-Z2-7//cd;
    my $bits = join '', map {
        sprintf '%05b', index('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', $_)
    } split //, $s;
    return pack 'B*', substr($bits, 0, int(length($bits) / 8) * 8);
}

sub totp {
    my ($key, $step, $digits) = @_;
    $digits //= 6;
    my $h = hmac_sha1(pack('NN', int($step / 2**32), $step % 2**32), $key);
    my $o = ord(substr($h, 19, 1)) & 15;
    my $bin = unpack('N', substr($h, $o, 4)) & 0x7fffffff;
    return sprintf '%0*d', $digits, $bin % 10**$digits;
}

is(totp('12345678901234567890', int(59 / 30), 8), '94287082',
   'the test\'s own TOTP matches RFC 6238 (T=59)');
is(totp('12345678901234567890', int(1111111109 / 30), 8), '07081804',
   'and T=1111111109');

# ------------------------------------------------------------------ sign in

my $r = get('/signin.html');
is($r->{status}, 200, 'signin.html is served');

$r = post('/api/auth/link', { email => 'Alice@Example.org',
                              consent_version => 'terms-1',
                              return_path => '/events.html' });
is($r->{status}, 202, 'link requested: 202');
is_deeply(body_of($r), { status => 'sent' }, '{"status":"sent"}');
ok(!$t->session_cookie($r), 'no cookie yet');

my $link = $t->mail_link('alice@example.org');
my $token = token_of($link);
ok($token, 'the mail job carries the link to confirm.html#token=')
    or diag("link: " . ($link // 'none'));
is($t->psql("SELECT payload->>'template' || ' ' || (payload->'vars'->>'expires_minutes') "
            . "FROM jobs.jobs WHERE payload->>'to' = 'alice\@example.org'"),
   'magic_link 15', 'mail template and expiry');
is($t->psql("SELECT count(*) FROM auth.users"), 0,
   'no account before confirmation');
like($t->psql("SELECT jobs.render_mail(id, payload, 'noreply\@example.org') "
              . "FROM jobs.jobs WHERE payload->>'to' = 'alice\@example.org'"),
     qr/^To: alice\@example\.org\r$/m,
     'the mail job renders (sql/004_jobs.sql) to alice');

is(get('/confirm.html')->{status}, 200, 'confirm.html is served');

$r = post('/api/auth/confirm', { token => $token },
          headers => { 'User-Agent' => 'test-agent/1' });
is($r->{status}, 200, 'confirm: 200');
my $b = body_of($r);
is($b->{status}, 'signed_in', 'signed_in');
is($b->{user}{email}, 'alice@example.org', 'as alice');
ok($b->{new_user}, 'a new account');
is($b->{return_path}, '/events.html', 'return path');

my ($alice, $line) = $t->session_cookie($r);
ok($alice, 'Set-Cookie platform_session') or diag(explain($r->{headers}));
like($line // '', qr/^platform_session=[A-Za-z0-9_-]{60,}; /,
     'the cookie is base64url');
like($line // '', qr/; Path=\//, 'Path=/');
like($line // '', qr/; HttpOnly/i, 'HttpOnly');
like($line // '', qr/; SameSite=Lax/i, 'SameSite=Lax');
like($line // '', qr/; Max-Age=(4319\d|43200)\b/, 'Max-Age: 12 h');
unlike($line // '', qr/; Secure/i, 'not Secure with platform_session_secure off');
unlike($line // '', qr/u=\d|participant/, 'the claims are not readable');

$r = get('/api/me', cookie => $alice);
is($r->{status}, 200, '/api/me with the cookie: 200');
$b = body_of($r);
is($b->{email}, 'alice@example.org', '/api/me: email');
is_deeply($b->{roles}, ['participant'], '/api/me: roles');
is(scalar @{$b->{sessions} || []}, 1, '/api/me: one session');
is($b->{sessions}[0]{user_agent}, 'test-agent/1', 'the session\'s browser');
is($b->{sessions}[0]{client_ip}, '127.0.0.1', 'and address');
is_deeply($b->{consents}, [{ version => 'terms-1',
                             accepted_at => $b->{consents}[0]{accepted_at} }],
          'consent recorded');
is($b->{mfa}, JSON::PP::false(), 'no second factor');

$r = get('/api/me');
is($r->{status}, 401, '/api/me without a cookie: 401');

$r = get('/api/whoami');
is($r->{status}, 200, 'platform_auth optional without a session: 200');
is(body_of($r)->{user}, undef, 'no identity');
$r = get('/api/whoami', cookie => $alice);
is(body_of($r)->{user}, user_id('alice@example.org'),
   'platform_auth optional with a session: $platform_user');
is(body_of($r)->{roles}, 'participant', '$platform_roles');
is(body_of($r)->{mfa}, '0', '$platform_mfa 0');

# The client cannot set the identity itself.
$r = $t->get('/api/whoami', headers => { 'X-Platform-User' => '1' });
is(body_of($r)->{user}, undef, 'identity cannot come from request headers');

# ------------------------------------------------------------------ links

$r = post('/api/auth/confirm', { token => $token });
is($r->{status}, 410, 'a link works once: 410 the second time');
is(body_of($r)->{error}{message},
   'This sign-in link is no longer valid: it was already used or has expired.',
   'with a sentence');
ok(!$t->session_cookie($r), 'and no cookie');

$r = post('/api/auth/confirm', { token => 'A' x 43 });
is($r->{status}, 410, 'an unknown token: 410');

$r = post('/api/auth/confirm', { nothing => 1 });
is($r->{status}, 400, 'no token: 400');

post('/api/auth/link', { email => 'late@example.org' });
my $late = token_of($t->mail_link('late@example.org'));
$t->psql("UPDATE auth.magic_links SET expires_at = now() - interval '1 second' "
         . "WHERE email = 'late\@example.org'");
$r = post('/api/auth/confirm', { token => $late });
is($r->{status}, 410, 'an expired link: 410');
is(body_of($r)->{error}{message},
   'This sign-in link is no longer valid: it was already used or has expired.',
   'the same message as for a used one');

# Known and unknown addresses: the same answer, byte for byte.
$t->psql("INSERT INTO auth.users (email) VALUES ('known\@example.org')");
my @known = (post('/api/auth/link', { email => 'known@example.org' }));
my @unknown = (post('/api/auth/link', { email => 'nobody@example.org' }));
is($known[0]{status}, $unknown[0]{status}, 'known/unknown email: same status');
is($known[0]{content}, $unknown[0]{content}, 'known/unknown email: same body');
my %hk = %{$known[0]{headers}};
my %hu = %{$unknown[0]{headers}};
delete @hk{qw(date)};
delete @hu{qw(date)};
is_deeply(\%hk, \%hu, 'known/unknown email: same headers (but Date)');

# Bad input
$r = post('/api/auth/link', { email => 'not an address' });
is($r->{status}, 400, 'a malformed email: 400');
like(body_of($r)->{error}{message} // '', qr/^This does not look like an email address/,
     'with a sentence');
$r = post('/api/auth/link', { email => 'x@example.org',
                              return_path => '//evil.example/' });
is($r->{status}, 400, 'a return path to another host: 400');
$r = post('/api/auth/link', 'not json');
is($r->{status}, 400, 'not JSON: 400');

# ------------------------------------------------------------------ limits

my @st = map { post('/api/auth/link', { email => 'rate@example.org' })->{status} }
         1 .. 3;
is_deeply(\@st, [202, 202, 202], 'per_email 3: three links');
$r = post('/api/auth/link', { email => 'RATE@example.org' });
is($r->{status}, 429, 'the fourth: 429');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'Retry-After');
cmp_ok($r->{headers}{'retry-after'} // 0, '>', 800, 'about 15 minutes');
is(body_of($r)->{error}{code}, 'rate_limited', 'code rate_limited');
like(body_of($r)->{error}{message} // '',
     qr/^Too many sign-in links were requested\. Please wait \d+ minutes and try again\.$/,
     'a sentence');
is($t->psql("SELECT count(*) FROM auth.magic_links WHERE email = 'rate\@example.org'"),
   3, 'no fourth link stored');

@st = map { post('/api/auth/link-ip', { email => "ip$_\@example.org" },
                 headers => { 'X-Test-IP' => '203.0.113.9' })->{status} } 1 .. 3;
is_deeply(\@st, [202, 202, 429], 'per_ip 2: the third address from one IP is refused');
is(post('/api/auth/link-ip', { email => 'ip4@example.org' },
        headers => { 'X-Test-IP' => '203.0.113.10' })->{status},
   202, 'another IP is not');

# ------------------------------------------------------------------ cookies

sub flip {
    my ($c, $i) = @_;
    my $ch = substr($c, $i, 1);
    substr($c, $i, 1) = $ch eq 'A' ? 'B' : 'A';
    return $c;
}

is(get('/api/me', cookie => flip($alice, 10))->{status}, 401,
   'a changed nonce: 401');
is(get('/api/me', cookie => flip($alice, 40))->{status}, 401,
   'a changed byte of the box: 401');
is(get('/api/me', cookie => flip($alice, length($alice) - 2))->{status}, 401,
   'a changed tag/claims byte: 401');
is(get('/api/me', cookie => substr($alice, 0, -4))->{status}, 401,
   'a truncated cookie: 401');
is(get('/api/me', cookie => 'garbage!')->{status}, 401, 'garbage: 401');
is(get('/api/me', cookie => '')->{status}, 401, 'empty: 401');
is(get('/api/me', cookie => 'A' x 3000)->{status}, 401, 'too long: 401');
is(get('/api/me', cookie => $alice)->{status}, 200, 'the real one still works');

# ------------------------------------------------------------------ origin

my $alice2 = $t->sign_in('alice@example.org');
ok($alice2, 'alice signs in a second time (another device)');

$r = post('/api/auth/logout', {}, cookie => $alice,
          headers => { Origin => 'http://evil.example' });
is($r->{status}, 403, 'POST with a cookie from a foreign Origin: 403');
is(body_of($r)->{error}{code}, 'origin', 'code origin');
$r = post('/api/auth/logout', {}, cookie => $alice,
          headers => { Origin => "http://127.0.0.1:" . ($port + 1) });
is($r->{status}, 403, 'another port is another origin: 403');
$r = post('/api/auth/logout', {}, cookie => $alice,
          headers => { Origin => undef });
is($r->{status}, 403, 'POST with a cookie and neither Origin nor Referer: 403');
$r = post('/api/auth/logout', {}, cookie => $alice,
          headers => { Origin => undef,
                       Referer => 'http://evil.example/account.html' });
is($r->{status}, 403, 'a foreign Referer: 403');
is(get('/api/me', cookie => $alice)->{status}, 200,
   'refused logouts did nothing');

$r = post('/api/auth/link', { email => 'cross@example.org' },
          headers => { Origin => 'http://evil.example' });
is($r->{status}, 202, 'without a cookie a foreign Origin is no matter');

# ------------------------------------------------------------------ logout

$r = post('/api/auth/logout', {}, cookie => $alice,
          headers => { Origin => undef,
                       Referer => "$origin/account.html" });
is($r->{status}, 200, 'logout (same-origin Referer): 200');
is_deeply(body_of($r), { status => 'signed_out' }, 'signed_out');
my ($gone, $gline) = $t->session_cookie($r);
ok(defined $gone, 'logout sets the cookie');
like($gline // '', qr/Max-Age=0\b/, 'expired at once');
is($gone, '', 'to nothing');

is(get('/api/me', cookie => $alice)->{status}, 401,
   'after logout the old cookie: 401');
is_deeply([map { $t->get('/api/me', fresh => 1,
                         headers => { Cookie => "platform_session=$alice" })
                   ->{status} } 1 .. 6],
          [(401) x 6], 'in every worker (fresh connections)');
is(get('/api/me', cookie => $alice2)->{status}, 401,
   'and the other device\'s cookie too (sign out everywhere)');
is(post('/api/auth/logout', {}, cookie => $alice)->{status}, 401,
   'logout again: 401');

my $alice3 = $t->sign_in('alice@example.org');
is(get('/api/me', cookie => $alice3)->{status}, 200,
   'signing in again works (new epoch)');
is(scalar @{body_of(get('/api/me', cookie => $alice3))->{sessions}}, 1,
   'only the new session is listed');

# Another host's logout arrives through the epoch poll.
$t->psql("SELECT platform.clear_session(" . user_id('alice@example.org') . ")");
my $ok = 0;
for (1 .. 50) {
    if (get('/api/me', cookie => $alice3)->{status} == 401) { $ok = 1; last }
    sleep 0.1;
}
ok($ok, 'a logout elsewhere (epoch bumped in SQL) ends the session within 5 s');

# ------------------------------------------------------------------ roles

my $bob = $t->sign_in('bob@example.org');
my $bob_id = user_id('bob@example.org');
is(get('/api/orgs/5/whoami', cookie => $bob)->{status}, 403,
   'a participant is not an organiser: 403');
is(get('/api/orgs/5/whoami')->{status}, 401, 'no session: 401');

$t->psql("INSERT INTO auth.memberships (user_id, role, org_id) "
         . "VALUES ($bob_id, 'organiser', 5), ($bob_id, 'owner', 9)");
is(get('/api/orgs/5/whoami', cookie => $bob)->{status}, 403,
   'roles are those of sign-in time: the old cookie is still a participant');

$bob = $t->sign_in('bob@example.org');
$r = get('/api/orgs/5/whoami', cookie => $bob);
is($r->{status}, 200, 'organiser org=$1: own organisation 200');
is_deeply(body_of($r), { user => $bob_id, role => 'organiser', org => '5',
                         roles => 'participant,organiser:5,owner:9',
                         mfa => '0' },
          '$platform_user, _role, _org, _roles, _mfa');
is(get('/api/orgs/6/whoami', cookie => $bob)->{status}, 403,
   'another organisation: 403');
is(get('/api/orgs/55/whoami', cookie => $bob)->{status}, 403,
   'an organisation whose id starts the same: 403');
is(get('/api/admin/whoami', cookie => $bob)->{status}, 403, 'not an admin: 403');

$t->psql("INSERT INTO auth.memberships (user_id, role) VALUES ($bob_id, 'admin')");
$bob = $t->sign_in('bob@example.org');
is(get('/api/admin/whoami', cookie => $bob)->{status}, 200, 'admin: 200');

# ------------------------------------------------------------------ TOTP

my $carol = $t->sign_in('carol@example.org');
my $carol_id = user_id('carol@example.org');
$t->psql("INSERT INTO auth.memberships (user_id, role, org_id) "
         . "VALUES ($carol_id, 'staff', 3)");
$carol = $t->sign_in('carol@example.org');

$r = get('/api/staff/whoami', cookie => $carol);
is($r->{status}, 403, 'staff without the second factor: 403');

$r = post('/api/auth/totp/enrol', {}, cookie => $carol);
is($r->{status}, 200, 'TOTP enrol: 200');
$b = body_of($r);
like($b->{secret} // '', qr/^[A-Z2-7]{32}$/, 'a base32 secret of 20 bytes');
is($b->{uri}, "otpauth://totp/Platform:carol%40example.org?secret=$b->{secret}"
              . '&issuer=Platform&algorithm=SHA1&digits=6&period=30',
   'the otpauth URI');
my $key = base32_decode($b->{secret});
is(length $key, 20, 'decoded key: 20 bytes');

my $step = int(time / 30);
my %valid = map { totp($key, $step + $_) => 1 } -1 .. 1;
my ($wrong) = grep { !$valid{$_} } qw(000000 111111 222222 333333);

$r = post('/api/auth/totp/verify', { code => $wrong }, cookie => $carol);
is($r->{status}, 400, 'a wrong code: 400');
is(body_of($r)->{error}{code}, 'totp_invalid', 'totp_invalid');
like(body_of($r)->{error}{message} // '', qr/^That code is not right\./,
     'with a sentence');
ok(!$t->session_cookie($r), 'no new cookie');
is(get('/api/staff/whoami', cookie => $carol)->{status}, 403, 'still 403');

my $code = totp($key, int(time / 30));
$r = post('/api/auth/totp/verify', { code => $code }, cookie => $carol);
is($r->{status}, 200, 'the right code: 200');
is_deeply(body_of($r), { status => 'verified', totp_enabled => JSON::PP::true() },
          'verified');
my $carol_mfa = $t->session_cookie($r);
ok($carol_mfa, 'a new cookie');

$r = get('/api/staff/whoami', cookie => $carol_mfa);
is($r->{status}, 200, 'staff with the second factor: 200');
is(body_of($r)->{mfa}, '1', '$platform_mfa 1');
is(body_of($r)->{role}, 'staff', '$platform_role staff');
is(body_of($r)->{org}, '3', '$platform_org 3');
is(get('/api/staff/whoami', cookie => $carol)->{status}, 403,
   'the cookie without the second factor still gets 403');
is(body_of(get('/api/me', cookie => $carol_mfa))->{mfa}, JSON::PP::true(),
   '/api/me says mfa');

$r = post('/api/auth/totp/verify', { code => $code }, cookie => $carol_mfa);
is($r->{status}, 400, 'the same code again: 400');
is(body_of($r)->{error}{code}, 'totp_replayed', 'totp_replayed');

$r = post('/api/auth/totp/enrol', {}, cookie => $carol);
is($r->{status}, 403, 'replacing the key without the second factor: 403');

# Wrong codes are limited (5 failures in 15 minutes; two so far).
@st = map { post('/api/auth/totp/verify', { code => $wrong },
                 cookie => $carol)->{status} } 1 .. 4;
is_deeply(\@st, [400, 400, 400, 429], 'then 429');

# ------------------------------------------------------------------ keys

# Rotation: the new key seals, the old one still opens.
my $dave = $t->sign_in('dave@example.org');
is(get('/api/me', cookie => $dave)->{status}, 200, 'dave signed in');

set_keys('new.key', 'session.key');
$t->reload;

is(get('/api/me', cookie => $dave)->{status}, 200,
   'rotation: a cookie sealed with the old key is still accepted');
my $dave_new = $t->sign_in('dave@example.org');
is(get('/api/me', cookie => $dave_new)->{status}, 200,
   'and new cookies work');
isnt($dave_new, $dave, 'new cookie');

set_keys('new.key');
$t->reload;

is(get('/api/me', cookie => $dave)->{status}, 401,
   'a cookie sealed with another key: 401');
is(get('/api/me', cookie => $dave_new)->{status}, 200,
   'the new key\'s cookie: 200');

# Revocation survives a reload.
is(get('/api/me', cookie => $alice)->{status}, 401,
   'a logged-out cookie stays refused after reloads');

$t->stop;

done_testing;
