#!/usr/bin/perl

# The privacy page in headless Chromium (t/browser/privacy.mjs):
# privacy.html -> the mailed link -> confirm.html -> back on privacy.html
# -> the export built by the jobs runner -> the mailed download link ->
# my-data.json saved by the page.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(browser_dir);

my $t = Test::Platform->new;
my $dir = browser_dir();

$t->key_file;
my $smtp = $t->smtp_sink;
my $smtp_port = $smtp->port;

$t->psql(<<'EOF');
CREATE FUNCTION api.t_last_link(email text) RETURNS json
LANGUAGE sql SECURITY DEFINER AS $$
    SELECT json_build_object('link', payload->'vars'->>'link')
    FROM jobs.jobs
    WHERE kind = 'mail' AND payload->>'to' = lower(replace(email, '%40', '@'))
    ORDER BY id DESC LIMIT 1
$$;
EOF

(my $conf = <<"EOF") =~ s/%%SMTP%%/$smtp_port/g;
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:%%SMTP%%;
    platform_smtp_from noreply\@example.org;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        @{[ $t->api_conf(qw(auth gdpr)) ]}

        # Test only: the mailbox.
        location = /test/last-link {
            platform_query GET api.t_last_link(\$arg_email);
        }
    }
EOF

$t->http_conf($conf);
$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
my $res = `node '$dir/privacy.mjs' '$base' 'pia\@example.org' 2>&1`;
my $rc = $? >> 8;

require JSON::PP;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $r = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;

is($rc, 0, 'privacy.mjs finished') or diag($res);
$r ||= {};

is_deeply($r->{steps}, ['requested', 'confirmed', 'downloaded'],
          'every step ran');
is($r->{title}, "Your data \x{b7} Platform", 'privacy.html title');
is($r->{empty_message}, 'Please enter your email address.',
   'an empty form: a sentence');
like($r->{sent_message} // '', qr/^Check your mail/, '"check your mail"');
like($r->{confirmed_message} // '', qr/^Your request is confirmed\. We will email you a link/,
     'confirmed: what happens next');
is($r->{filename}, 'my-data.json', 'the file is my-data.json');
is($r->{file}{'auth.users'}{email}, 'pia@example.org',
   'holding the person\'s data');
like($r->{downloaded_message} // '', qr/downloaded/, 'the page says so');
is_deeply($r->{errors}, [], 'no page errors');

done_testing;
