#!/usr/bin/perl

# The owner's page of one home (html/owner/home.html, html/js/owner-home.js)
# in headless Chromium (t/browser/rentals-comms.mjs): reached from
# /owner/, it changes the key box code, shows the calendar address,
# imports a calendar (t/data/ical/airbnb.ics served by this nginx through
# a platform_jobs_service) and mails the home's past guests.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(browser_dir);
use JSON::PP;

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = browser_dir();
my $tdir = $t->testdir;

$t->key_file;

# The test-only mailbox (as t/102): the newest mail job to an address.
$t->psql(<<'SQL');
CREATE FUNCTION api.t_last_mail(email text, template text) RETURNS json
LANGUAGE sql SECURITY DEFINER AS $$
    SELECT json_build_object('template', payload->>'template',
                             'link', payload->'vars'->>'link',
                             'vars', payload->'vars')
    FROM jobs.jobs
    WHERE kind = 'mail'
      AND payload->>'to' = lower(app.url_decode(email))
      AND (coalesce(template, '') = ''
           OR payload->>'template' = template)
    ORDER BY id DESC LIMIT 1
$$;
SQL

$t->http_conf(<<"CONF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $tdir/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:9;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service ical_local http://127.0.0.1:%%PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        @{[ $t->api_conf(qw(core auth rentals rentals_comms)) ]}

        location /feeds/ {
            alias %%ROOT%%/t/data/ical/;
        }
        location = /test/last-mail {
            platform_query GET api.t_last_mail(\$arg_email, \$arg_template);
        }
    }
CONF

$t->ignore_log(qr/SMTP connect\(\) to 127\.0\.0\.1:9 failed/);
$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
my $json = JSON::PP->new->canonical;
$t->psql("INSERT INTO rentals.ical_hosts (origin, service) "
         . "VALUES ('$base', 'ical_local')");

sub req {
    my ($method, $path, $body, $cookie) = @_;
    return $t->req($method, $path,
                   headers => { Origin => $base,
                                $cookie ? (Cookie => "platform_session=$cookie")
                                        : () },
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

my $ann = $t->sign_in('ann@example.org');
is(req('POST', '/api/rentals/signup', { email => 'ann@example.org',
       business_name => 'Ann Stays', slug => 'ann-home' }, $ann)->{status},
   201, 'ann runs a business');
my $r = req('POST', '/api/owner/properties',
            { name => 'Sea View', capacity => 4, price_minor => 10000,
              currency => 'EUR', cleaner_email => 'clean@example.org' }, $ann);
my $pid = ($t->json($r) || {})->{id};
ok($pid, 'with a home');
$t->psql("INSERT INTO rentals.bookings (business_id, property_id, stay, "
         . "status, kind, guest_email) SELECT business_id, id, "
         . "daterange(current_date - 30 - 3 * i, current_date - 28 - 3 * i), "
         . "'confirmed', 'booking', 'past' || i || '\@example.org' "
         . "FROM rentals.properties, generate_series(1, 2) i WHERE id = $pid");
is(req('POST', '/api/auth/link', { email => 'ann@example.org',
                                   return_path => '/owner/' })->{status}, 202,
   'a sign-in link for ann to /owner/');

my $res = `node '$dir/rentals-comms.mjs' '$base' home 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $all = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;
is($rc, 0, 'rentals-comms.mjs finished') or diag($res);
my $h = ($all || {})->{home} || {};

is_deeply($h->{errors}, [], 'no script errors or failed loads')
    or diag(explain($h->{errors}));
is_deeply($h->{steps}, ['page', 'rotate', 'import', 'announce'],
          'every step ran');
is($h->{code_before}, 'none yet', 'no code before');
like($h->{code_after} // '', qr/^\d{6}$/, 'a six-digit code after');
is($h->{code_after}, $t->psql("SELECT code FROM rentals.key_codes "
                              . "WHERE property_id = $pid"),
   'the one stored');
is($h->{codes}, 1, 'listed');
like($h->{export_url} // '', qr{^\Q$base\E/ical/[0-9a-f]{32}\.ics$},
     'the calendar address');
like($h->{feed} // '', qr/airbnb.*ok: 3 dates blocked/s, 'the import ran');
like($h->{announce} // '', qr/Sending to 2 past guests/, 'announced');
is($t->psql("SELECT count(*) FROM jobs.jobs WHERE kind = 'mail' "
            . "AND payload->>'subject' = 'Free in June'"), 2,
   'two mails queued');

done_testing;
