#!/usr/bin/perl

# The magic link by real mail: api.auth_request_link enqueues the mail job,
# the jobs runner (platform_jobs) renders and sends it over SMTP to a sink
# (Debian's python3-aiosmtpd), the link in the received message signs in.
# The flow's rules are in t/50-auth.t; this file checks that the pieces
# meet.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use MIME::Base64 qw(decode_base64);
use Time::HiRes qw(sleep);

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $t = Test::Platform->new;
my $dir = $t->testdir;

$t->key_file;    # session.key in the test directory

my $smtp = $t->smtp_sink;
my $smtp_port = $smtp->port;

(my $conf = <<'EOF') =~ s/%%SMTP%%/$smtp_port/g;
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:%%SMTP%%;
    platform_smtp_from noreply@example.org;

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/auth/link {
            platform_query POST api.auth_request_link(
                body => $platform_body::jsonb, token => $platform_random,
                client_ip => $remote_addr,
                base_url => http://127.0.0.1:%%PORT%%);
        }
        location = /api/auth/confirm {
            platform_query POST api.auth_confirm(
                body => $platform_body::jsonb, client_ip => $remote_addr,
                user_agent => $http_user_agent);
        }
        location = /api/me {
            platform_auth any;
            platform_query GET api.me($platform_user::bigint,
                                      $platform_mfa::boolean);
        }
    }
EOF

$t->http_conf($conf);
$t->run;

my $origin = 'http://127.0.0.1:' . $t->port;

my $r = $t->req('POST', '/api/auth/link',
                body => '{"email": "Mail.Test@Example.org", "consent_version": "terms-1"}');
is($r->{status}, 202, 'link requested');

is($smtp->wait_count(1, 15), 1, 'one mail arrives at the SMTP sink')
    or diag($t->psql("SELECT state || ' ' || coalesce(last_error, '') FROM jobs.jobs"));

my ($msg) = $smtp->messages;
my ($env) = $smtp->envelopes;
$msg //= '';

is_deeply($env->{rcpt_tos}, ['mail.test@example.org'],
          'sent to the address, lower-cased');
like($msg, qr/^Subject: Your sign-in link\r$/m, 'subject');

# The parts are base64 (sql/004_jobs.sql): decode every one.
my $text = '';
while ($msg =~ /\r\n\r\n([A-Za-z0-9+\/=\r\n]{40,}?)(?:\r\n--|\z)/g) {
    $text .= decode_base64($1) . "\n";
}

my ($token) = $text =~ m{\Q$origin\E/confirm\.html#token=([A-Za-z0-9_-]{43})};
ok($token, 'the mail carries the link') or diag($msg);
like($text, qr/expires in 15 minutes/, 'and says how long it works');
like($text, qr{<a href="\Q$origin\E/confirm\.html#token=\Q$token\E">},
     'the HTML part links to it') if $token;

is($t->psql("SELECT state FROM jobs.jobs WHERE kind = 'mail'"), 'done',
   'the job is done');

$r = $t->req('POST', '/api/auth/confirm',
             body => qq{{"token": "$token"}});
is($r->{status}, 200, 'the mailed link signs in');
my ($cookie) = ($r->{headers}{'set-cookie'} // '') =~ /^platform_session=([^;]+)/;
ok($cookie, 'session cookie');

$r = $t->get('/api/me', headers => { Cookie => "platform_session=$cookie" });
is($r->{status}, 200, '/api/me');
is($t->json($r)->{email}, 'mail.test@example.org', 'as the mailed address');

done_testing;
