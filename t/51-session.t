#!/usr/bin/perl

# Session cookies and platform_auth, C side: sealing and opening, cookie
# flags, tampered / foreign / expired / over-long cookies, key rotation,
# roles and organisations, the second factor, the Origin check, ending
# sessions through response.session, $platform_random, and configuration
# errors. Claims are written by a test function so this file does not
# depend on the auth schema's rules (t/50-auth.t covers those).

use strict;
use warnings;

use MIME::Base64 qw(decode_base64 encode_base64);
use Test::More;
use Test::Platform;

my $t = Test::Platform->new(workers => 2);
my $dir = $t->testdir;

$t->key_file('new.key');
$t->key_file('old.key');
$t->key_file('other.key');

$t->psql(<<'EOF');
CREATE FUNCTION api.t_issue(claims text) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('response.session', claims, true);
    RETURN '{"ok":true}';
END
$$;

CREATE FUNCTION api.t_who(u text, role text, org text, roles text, mfa text,
                          rnd text)
RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('user', u, 'role', role, 'org', org,
                             'roles', roles, 'mfa', mfa, 'rnd', rnd)
$$;
EOF

my $who = 'api.t_who($platform_user, $platform_role, $platform_org, '
        . '$platform_roles, $platform_mfa, $platform_random)';

sub conf {
    my (%o) = @_;
    my $keys = $o{keys} // "%%TESTDIR%%/new.key";
    my $secure = $o{secure} // 'off';
    return <<"EOF";
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }
    platform_session_key $keys;
    platform_session_secure $secure;
    platform_session_epoch_poll 1s;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /issue2 { platform_query GET api.t_issue(\$arg_c); }
        location = /any    { platform_auth any; platform_query GET $who; }
        location = /post   { platform_auth any; platform_query POST $who; }
        location = /opt    { platform_auth optional; platform_query GET $who; }
        location ~ ^/org/(\\d+)\$ {
            platform_auth organiser org=\$1;
            platform_query GET $who;
        }
        location = /organy { platform_auth organiser owner; platform_query GET $who; }
        location = /staff  { platform_auth staff; platform_query GET $who; }
        location = /admin  { platform_auth admin; platform_query GET $who; }
    }
EOF
}

# the argument list is values, not expressions: pass the claims as $arg_c
$t->http_conf(conf());
$t->run;

my $now = time;

sub claims {
    my (%o) = @_;
    my $x = $o{x} // $now + 3600;
    my $u = $o{u} // 7;
    my $e = $o{e} // 0;
    my $f = $o{f} // 0;
    my $r = $o{r} // 'participant,organiser:5';
    return "u=$u;e=$e;x=$x;f=$f;r=$r";
}

sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

sub issue {
    my ($claims, %o) = @_;
    my $r = $t->get('/issue2?c=' . $claims, %o);
    my $sc = $r->{headers}{'set-cookie'} // '';
    $sc = $sc->[0] if ref $sc;
    return ($r, $sc);
}

sub cookie_of {
    my ($sc) = @_;
    my ($v) = $sc =~ /^(platform_session=[^;]*)/;
    return $v;
}

sub as {
    my ($cookie, $path, %o) = @_;
    my $method = $o{method} // 'GET';
    return $t->req($method, $path, headers => { cookie => $cookie,
                                                %{$o{headers} || {}} },
                   fresh => 1);
}

# --- issuing -------------------------------------------------------------

my ($r, $sc) = issue(claims());
is($r->{status}, 200, 'issuing answers the function');
like($sc, qr/^platform_session=[A-Za-z0-9_-]{60,}; /, 'cookie set, base64url');
like($sc, qr/; HttpOnly/, 'HttpOnly');
like($sc, qr/; SameSite=Lax/, 'SameSite=Lax');
like($sc, qr/; Path=\//, 'Path=/');
like($sc, qr/; Max-Age=(3599|3600)\b/, 'Max-Age = remaining lifetime');
unlike($sc, qr/Secure/, 'no Secure with platform_session_secure off');

my $cookie = cookie_of($sc);
my ($r2, $sc2) = issue(claims());
isnt(cookie_of($sc2), $cookie, 'each seal has a fresh nonce');

# --- opening -------------------------------------------------------------

$r = as($cookie, '/any');
is($r->{status}, 200, 'any: valid cookie accepted');
my $j = $t->json($r);
is($j->{user}, '7', '$platform_user');
is($j->{role}, 'participant', '$platform_role for any');
is($j->{roles}, 'participant,organiser:5', '$platform_roles');
is($j->{mfa}, '0', '$platform_mfa');
like($j->{rnd}, qr/^[A-Za-z0-9_-]{43}$/, '$platform_random: 43 base64url');

my $r3 = $t->json(as($cookie, '/any'));
isnt($r3->{rnd}, $j->{rnd}, '$platform_random differs per use');

$r = $t->get('/any', fresh => 1);
is($r->{status}, 401, 'no cookie: 401');
is($t->json($r)->{error}{code}, 'unauthenticated', 'JSON error code');

$r = $t->get('/opt', fresh => 1);
is($r->{status}, 200, 'optional without a cookie: 200');
is($t->json($r)->{user}, undef, 'no identity without a cookie');

$r = as($cookie, '/opt');
is($t->json($r)->{user}, '7', 'optional with a cookie: identity');

# a client cannot choose its identity by sending headers or arguments
$r = $t->req('GET', '/opt?platform_user=1',
             headers => { 'X-Platform-User' => '1' }, fresh => 1);
is($t->json($r)->{user}, undef, 'identity not taken from the request');

# --- bad cookies ---------------------------------------------------------

(my $b64 = $cookie) =~ s/^platform_session=//;
(my $std = $b64) =~ tr/-_/+\//;
my $raw = decode_base64($std . '=' x ((4 - length($std) % 4) % 4));

sub enc {
    my ($bytes) = @_;
    my $s = encode_base64($bytes, '');
    $s =~ tr/+\//-_/;
    $s =~ s/=+$//;
    return "platform_session=$s";
}

my $flipped = $raw;
substr($flipped, -5, 1) = chr(ord(substr($flipped, -5, 1)) ^ 1);
is(as(enc($flipped), '/any')->{status}, 401, 'tampered ciphertext: 401');

my $nonce = $raw;
substr($nonce, 3, 1) = chr(ord(substr($nonce, 3, 1)) ^ 1);
is(as(enc($nonce), '/any')->{status}, 401, 'tampered nonce: 401');

my $ver = $raw;
substr($ver, 0, 1) = chr(2);
is(as(enc($ver), '/any')->{status}, 401, 'unknown version: 401');

is(as('platform_session=!!!not-base64!!!', '/any')->{status}, 401,
   'garbage: 401');
is(as('platform_session=' . ('A' x 3000), '/any')->{status}, 401,
   'over-long cookie: 401');
is(as('platform_session=', '/any')->{status}, 401, 'empty cookie: 401');

# expired: a session claiming 2 s
(undef, $sc) = issue(claims(x => time + 2));
my $short = cookie_of($sc);
is(as($short, '/any')->{status}, 200, 'short session valid at first');
sleep 3;
is(as($short, '/any')->{status}, 401, 'expired session: 401');

# longer than platform_session_max_age (30 d by default): not issued
($r, $sc) = issue(claims(x => time + 40 * 86400));
is($r->{status}, 500, 'session longer than max_age: not issued');
is($sc, '', 'no cookie for it');
like($t->error_log, qr/longer than platform_session_max_age/,
     'the error log says why');

# invalid claims from SQL are a server error, not a cookie
($r, $sc) = issue('u=abc;e=0');
is($r->{status}, 500, 'malformed claims from SQL: 500');
is($sc, '', 'no cookie for malformed claims');

# --- roles and organisations ----------------------------------------------

is(as($cookie, '/org/5')->{status}, 200, 'organiser of org 5: /org/5');
is($t->json(as($cookie, '/org/5'))->{org}, '5', '$platform_org');
is($t->json(as($cookie, '/org/5'))->{role}, 'organiser', '$platform_role');
is(as($cookie, '/org/6')->{status}, 403, 'organiser of 5 at /org/6: 403');
is($t->json(as($cookie, '/org/6'))->{error}{code}, 'forbidden', 'code');
is(as($cookie, '/admin')->{status}, 403, 'not admin: 403');

(undef, $sc) = issue(claims(r => 'participant,owner:9'));
my $owner = cookie_of($sc);
$j = $t->json(as($owner, '/organy'));
is($j->{role}, 'owner', 'first held role of a list');
is($j->{org}, '9', 'its organisation');
is(as($owner, '/org/9')->{status}, 403, 'owner is not organiser');

(undef, $sc) = issue(claims(r => 'participant,staff:3'));
my $staff = cookie_of($sc);
$r = as($staff, '/staff');
is($r->{status}, 403, 'staff without second factor: 403');
is($t->json($r)->{error}{code}, 'mfa_required', 'mfa_required');

(undef, $sc) = issue(claims(r => 'participant,staff:3', f => 1));
is(as(cookie_of($sc), '/staff')->{status}, 200, 'staff with second factor');
is($t->json(as(cookie_of($sc), '/staff'))->{mfa}, '1', '$platform_mfa 1');

# --- Origin check ----------------------------------------------------------

my $self = 'http://127.0.0.1:' . $t->port;

$r = as($cookie, '/post', method => 'POST');
is($r->{status}, 403, 'POST with a cookie and no Origin: 403');
is($t->json($r)->{error}{code}, 'origin', 'code origin');

$r = as($cookie, '/post', method => 'POST',
        headers => { origin => 'http://evil.example' });
is($r->{status}, 403, 'foreign Origin: 403');

$r = as($cookie, '/post', method => 'POST', headers => { origin => $self });
is($r->{status}, 200, 'own Origin: 200');

$r = as($cookie, '/post', method => 'POST',
        headers => { referer => "$self/account.html?x=1" });
is($r->{status}, 200, 'own Referer without Origin: 200');

$r = as($cookie, '/post', method => 'POST',
        headers => { referer => "http://evil.example/$self" });
is($r->{status}, 403, 'foreign Referer: 403');

$r = $t->req('POST', '/opt', headers => { origin => 'http://evil.example' },
             fresh => 1);
is($r->{status}, 405, 'no cookie: the Origin check does not apply');

# --- ending sessions: response.session "-;u=;e=" -------------------------

(undef, $sc) = issue(claims(u => 11, e => 0));
my $u11 = cookie_of($sc);
is(as($u11, '/any')->{status}, 200, 'user 11 signed in');

($r, $sc) = issue('-;u=11;e=1');
like($sc, qr/^platform_session=; .*Max-Age=0/, 'clearing sends an expired cookie');

# both workers see it at once: the table is shared
for (1 .. 4) {
    is(as($u11, '/any')->{status}, 401, "old epoch refused ($_)");
}

(undef, $sc) = issue(claims(u => 11, e => 1));
is(as(cookie_of($sc), '/any')->{status}, 200, 'a session at the new epoch');
is(as($cookie, '/any')->{status}, 200, 'other users unaffected');

# --- key rotation ------------------------------------------------------------

$t->http_conf(conf(keys => '%%TESTDIR%%/other.key %%TESTDIR%%/new.key',
                   secure => 'on'));
$t->reload;

is(as($cookie, '/any')->{status}, 200, 'cookie of the previous key accepted');
(undef, $sc) = issue(claims());
like($sc, qr/; Secure/, 'Secure with platform_session_secure on');
my $rotated = cookie_of($sc);

$t->http_conf(conf(keys => '%%TESTDIR%%/other.key'));
$t->reload;

is(as($cookie, '/any')->{status}, 401, 'key dropped: its cookies refused');
is(as($rotated, '/any')->{status}, 200, 'new key still accepted');

$t->http_conf(conf(keys => '%%TESTDIR%%/old.key'));
$t->reload;
is(as($rotated, '/any')->{status}, 401, 'foreign key: 401');

$t->stop;

# --- configuration errors ----------------------------------------------------

my @bad = (
    [ 'platform_auth without a key', qr/platform_auth.*platform_session_key/,
      <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server { listen 127.0.0.1:%%PORT%%; location / { platform_auth any; } }
EOF
    [ 'unknown role', qr/invalid role "boss".*platform_auth/, <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    platform_session_key %%TESTDIR%%/new.key;
    server { listen 127.0.0.1:%%PORT%%; location / { platform_auth boss; } }
EOF
    [ 'key file of the wrong size', qr/platform_session_key.*32 random bytes/,
      <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    platform_session_key %%TESTDIR%%/short.key;
    server { listen 127.0.0.1:%%PORT%%; location / { platform_auth any; } }
EOF
    [ 'missing key file', qr/platform_session_key.*cannot open/, <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    platform_session_key %%TESTDIR%%/nope.key;
    server { listen 127.0.0.1:%%PORT%%; location / { platform_auth any; } }
EOF
);

open my $fh, '>', "$dir/short.key" or die $!;
print $fh "too short\n";
close $fh;

for my $case (@bad) {
    my ($name, $re, $conf) = @$case;
    $t->http_conf($conf);
    my ($ok, $out) = $t->nginx_t;
    ok(!$ok, "$name: nginx -t fails");
    like($out, $re, "$name: the message says why");
}

done_testing;
