#!/usr/bin/perl

# Holiday rentals pages in headless Chromium (t/browser/rentals.mjs):
# a guest books a stay on the public site /b/{slug}/ and pays through the
# Stripe-format server (t/lib/stripe_server.py); the owner's page shows
# the booking.  The business, its home and a photo are set up over HTTP
# first.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(browser_dir);
use JSON::PP;

plan(skip_all => 'python3-aiosmtpd not installed (make deps installs it)')
    unless -d '/usr/lib/python3/dist-packages/aiosmtpd';

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = browser_dir();
my $tdir = $t->testdir;

$t->key_file;
my ($key, $whsec) = ('sk_test_102rentals0123456789',
                     'whsec_102rentalsSecret0123456789');
for (['stripe.key', $key], ['stripe-webhook.secret', $whsec]) {
    open(my $fh, '>', "$tdir/$_->[0]") or die "$_->[0]: $!\n";
    print $fh "$_->[1]\n";
    close $fh;
}
my $smtp = $t->smtp_sink;
my $stripe = $t->stripe_server(key => $key, webhook_secret => $whsec,
    webhook_url => 'http://127.0.0.1:' . $t->port . '/api/stripe/webhook');
my ($sp, $stp) = ($smtp->port, $stripe->port);

# The test-only mailbox (as t/56): the newest mail job to an address.
$t->psql(<<'EOF');
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
EOF

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $tdir/session.key;
    platform_session_secure off;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:$sp;
    platform_smtp_from noreply\@platform.test;
    platform_jobs_service stripe http://127.0.0.1:$stp bearer=$tdir/stripe.key;

    server {
        listen 127.0.0.1:%%PORT%%;
        root %%ROOT%%/html;
        index index.html;

        @{[ $t->api_conf(qw(core auth rentals)) ]}

        # the pages as conf/nginx.conf serves them
        location ~ "^/b/[a-z0-9-]{3,63}/(?:index\\.html)?\$" {
            try_files /b/index.html =404;
        }
        location ~ "^/b/[a-z0-9-]{3,63}/(property|booking)\\.html\$" {
            try_files /b/\$1.html =404;
        }
        # photos (thumbnails: the originals here; t/100 tests image_filter)
        location /media/ {
            alias %%TESTDIR%%/var/media/;
        }
        location ~ "^/media/w(?:320|960)/(.*)\$" {
            alias %%TESTDIR%%/var/media/\$1;
        }

        location = /api/stripe/webhook {
            platform_webhook_signature stripe $tdir/stripe-webhook.secret
                                       tolerance=300s;
            platform_query POST api.stripe_webhook(\$platform_body::jsonb,
                \$platform_signature_time::bigint);
        }
        location = /test/last-mail {
            platform_query GET api.t_last_mail(\$arg_email, \$arg_template);
        }
    }
EOF

$t->run;

my $base = 'http://127.0.0.1:' . $t->port;
my $json = JSON::PP->new->canonical;

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
my $r = req('POST', '/api/rentals/signup', { email => 'ann@example.org',
    business_name => 'Ann Stays', slug => 'ann-stays' }, $ann);
is($r->{status}, 201, 'ann runs ann-stays');
$r = req('POST', '/api/owner/properties',
         { name => 'Sea View', capacity => 4, price_minor => 10000,
           cleaning_fee_minor => 5000, currency => 'EUR', min_nights => 2,
           description => "Two rooms.\nA balcony." }, $ann);
my $pa = ($t->json($r) || {})->{id};
ok($pa, 'with a home');
open(my $fh, '<:raw', "$root/t/data/cover.jpg") or die "cover.jpg: $!\n";
my $jpg = do { local $/; <$fh> };
close $fh;
is(req('POST', "/api/owner/properties/$pa/images", $jpg, $ann)->{status}, 201,
   'and a photo');
# ann's next sign-in link returns to the owner page
is(req('POST', '/api/auth/link', { email => 'ann@example.org',
                                   return_path => '/owner/' })->{status}, 202,
   'a sign-in link for ann to /owner/');

my $res = `node '$dir/rentals.mjs' '$base' book owner 2>&1`;
my $rc = $? >> 8;
my ($line) = $res =~ /^(\{.*\})\s*$/m;
my $all = $line ? eval { JSON::PP->new->utf8->decode($line) } : undef;
is($rc, 0, 'rentals.mjs finished') or diag($res);
$all ||= {};

my $b = $all->{book} || {};
is_deeply($b->{errors}, [], 'book: no script errors or failed loads')
    or diag(explain($b->{errors}));
is_deeply($b->{steps}, ['property', 'quote', 'checkout', 'paid'],
          'book: every step ran');
is($b->{site_name}, 'Ann Stays', 'the site shows the business');
is($b->{photos}, 1, 'the property page shows the photo');
like($b->{short_stay} // '', qr/at least 2 nights/,
     'a one-night stay is refused at the field');
like($b->{price} // '', qr/^3 nights: .*350/, 'the quote: 3 nights, 350');
like($b->{sent} // '', qr/gus\@example\.org/, 'the link is sent');
like($b->{confirmed} // '', qr/confirmed/, 'paid: the booking is confirmed');
is($t->psql("SELECT status FROM rentals.bookings "
            . "WHERE guest_email = 'gus\@example.org'"),
   'confirmed', 'in the database too');

my $o = $all->{owner} || {};
is_deeply($o->{errors}, [], 'owner: no script errors or failed loads')
    or diag(explain($o->{errors}));
is($o->{business}, 'Ann Stays', 'the owner page shows the business');
like($o->{homes} // '', qr/Sea View/, 'its homes');
like($o->{bookings} // '', qr/Gus Guest.*confirmed/s, 'and the booking');

done_testing;
