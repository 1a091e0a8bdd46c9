#!/usr/bin/perl

# Signing in through the pages in headless Chromium (t/browser/signin.mjs):
# signin.html -> the mailed link -> confirm.html ("Sign in" clicked, never
# on load) -> account.html showing the email; TOTP set-up for a staff
# account; a spent link; sign out everywhere; the rate-limit sentence.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(browser_dir);

my $t = Test::Platform->new;
my $dir = browser_dir();

$t->key_file;    # session.key in the test directory

# A staff account (TOTP on the account page) and the test-only "mailbox":
# the last link mailed (the mail job's payload, sql/004_jobs.sql).
$t->psql(<<'EOF');
WITH u AS (INSERT INTO auth.users (email) VALUES ('staff@example.org')
           RETURNING id)
INSERT INTO auth.memberships (user_id, role, org_id)
SELECT id, 'staff', 3 FROM u;

CREATE FUNCTION api.t_last_link(email text) RETURNS json
LANGUAGE sql SECURITY DEFINER AS $$
    SELECT json_build_object('link', payload->'vars'->>'link')
    FROM jobs.jobs
    WHERE kind = 'mail' AND payload->>'to' = lower(replace(email, '%40', '@'))
    ORDER BY id DESC LIMIT 1
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        location = /api/auth/link {
            platform_query POST api.auth_request_link(
                body => $platform_body::jsonb, token => $platform_random,
                client_ip => $remote_addr,
                base_url => http://127.0.0.1:%%PORT%%, per_email => 3::int);
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

        # Test only: the mailbox.
        location = /test/last-link {
            platform_query GET api.t_last_link($arg_email);
        }
    }
EOF

$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
my $res = `node '$dir/signin.mjs' '$base' 'Staff\@Example.org' 2>&1`;
my $rc = $? >> 8;

require JSON::PP;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $r = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'signin.mjs finished') or diag($res);
ok($r, 'signin.mjs reported') or diag($res);
$r ||= {};

is_deeply($r->{steps}, ['requested', 'signed in', 'totp', 'reuse refused',
                        'signed out', 'rate limit'], 'every step ran');
is($r->{title}, "Sign in \x{b7} Platform", 'signin.html title');
is($r->{empty_message}, 'Please enter your email address.',
   'an empty form: a sentence');
is($r->{consent_message}, 'Please agree to the terms of use to continue.',
   'consent is required');
like($r->{sent_message} // '',
     qr/^Check your mail: we sent a sign-in link to Staff\@Example\.org\./,
     '"check your mail"');
ok($r->{form_hidden}, 'the form is gone');
like($r->{link} // '', qr{^\Q$base\E/confirm\.html#token=[A-Za-z0-9_-]{43}$},
     'the mailed link');

is($r->{confirm_before_click}, 0, 'confirm.html sends nothing on load');
is($r->{button}, 'Sign in', 'it shows a "Sign in" button');
is($r->{landed}, '/account.html', 'after the click: account.html');
is($r->{account_email}, 'staff@example.org', 'which shows the email');
is($r->{sessions}, 1, 'and the session');
is_deeply($r->{cookie}, { httpOnly => JSON::PP::true(), sameSite => 'Lax' },
          'the session cookie is HttpOnly, SameSite=Lax');
ok(!$r->{cookie_visible_to_script}, 'scripts cannot read it');

like($r->{totp_uri} // '', qr{^otpauth://totp/Platform:staff%40example\.org\?secret=[A-Z2-7]{32}&},
     'TOTP set-up shows the otpauth URI');
like($r->{totp_wrong} // '', qr/^That code is not right\./,
     'a wrong code: a sentence');
like($r->{totp_state} // '', qr/this session is verified/,
     'the right code verifies the session');

like($r->{reused_message} // '', qr/^This sign-in link is no longer valid/,
     'a spent link: a sentence');
is($r->{reused_offers}, '/signin.html', 'and a way to get a new one');

is($r->{logout_text}, 'You are signed out on every device.',
   'sign out everywhere');
is($r->{after_reload}, 'Sign in to see your account.',
   'after reloading the account page offers to sign in');

like($r->{limit_message} // '',
     qr/^Too many sign-in links were requested\. Please wait \d+ minutes and try again\.$/,
     'the rate limit reads as a sentence');

is_deeply($r->{errors}, [], 'no script errors, failed loads or 4xx pages')
    or diag(explain($r->{errors}));

# Every API answer the pages got, in order.
my @api = @{$r->{responses} || []};
is_deeply([grep { !m{^(GET|POST) /api/(auth/(link|confirm|logout|totp/(enrol|verify))|me) }} @api],
          [], 'the pages only called the auth API');
is_deeply([grep { / [45]\d\d$/ } @api],
          ['POST /api/auth/totp/verify 400', 'POST /api/auth/confirm 410',
           'GET /api/me 401', 'POST /api/auth/link 429'],
          'the only failures are the ones provoked')
    or diag(explain(\@api));

my $log = Test::Platform::_slurp($t->testdir . '/access.log') // '';
like($log, qr{"GET /js/signin\.js HTTP/1\.1" 200}, 'signin.js loaded');
like($log, qr{"GET /js/confirm\.js HTTP/1\.1" 200}, 'confirm.js loaded');
like($log, qr{"GET /js/account\.js HTTP/1\.1" 200}, 'account.js loaded');

done_testing;
