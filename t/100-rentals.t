#!/usr/bin/perl

# Holiday rentals, part 1 (issue 7; sql/016_rentals.sql,
# conf/api/rentals.conf): businesses signed up by magic link, owners
# inviting owners, properties and their photos (uploads, order, thumbnails
# made once), and the tenant matrix: every owner endpoint, called by the
# owner of another business, answers 404 and changes nothing.

use strict;
use warnings;

use Test::More;
use Test::Platform qw(field_of);
use File::Basename qw(dirname);
use JSON::PP;

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $root = $t->root;
my $origin = 'http://127.0.0.1:' . $t->port;

my $mod = $ENV{PLATFORM_MODULE} || "$root/build/ngx_platform_module.so";
my ($image_filter) = grep { -f $_ }
    (($ENV{SAN} // '') eq '1'
         ? (dirname($mod) . '/objs/ngx_http_image_filter_module.so') : (),
     '/usr/lib/nginx/modules/ngx_http_image_filter_module.so');
plan skip_all => 'no image_filter module (make deps installs '
                 . 'libnginx-mod-http-image-filter)'
    unless $image_filter;

$t->key_file;
$t->main_conf("load_module $image_filter;");

my $name_re = '[0-9a-f]{2}/[0-9a-f]{64}\.(?:jpg|png|webp)';

# The thumbnail set-up of conf/nginx.conf (docs/media.md).
$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    proxy_cache_path %%TESTDIR%%/thumbs levels=1:2 keys_zone=thumbs:1m
                     use_temp_path=off;

    server {
        listen 127.0.0.1:%%PORT2%%;

        location ~ "^/w(320|960)/($name_re)\$" {
            alias %%TESTDIR%%/var/media/\$2;
            image_filter resize \$1 -;
            image_filter_buffer 6m;
        }
    }

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth rentals)) ]}

        location /media/ {
            alias %%TESTDIR%%/var/media/;
        }

        location ~ "^/media/(w320|w960)/($name_re)\$" {
            proxy_pass http://127.0.0.1:%%PORT2%%/\$1/\$2;
            proxy_cache thumbs;
            proxy_cache_valid 200 365d;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }
    }
EOF

$t->run;

my $json = JSON::PP->new->canonical;

sub body_of { $t->json($_[0]) || {} }

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h = (Origin => $origin, %{$o{headers} || {}});
    $h{Cookie} = "platform_session=$o{cookie}" if defined $o{cookie};
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => ref $body ? $json->encode($body)
                                                      : $body) : ());
}

sub token_of {
    my ($email) = @_;
    my ($tok) = ($t->mail_link($email) // '')
        =~ m{/confirm\.html#token=([A-Za-z0-9_-]{43})};
    return $tok;
}

sub slurp {
    open(my $fh, '<:raw', $_[0]) or die "$_[0]: $!\n";
    local $/;
    return <$fh>;
}

# ------------------------------------------------------------------ sign-up

my $r = req('POST', '/api/rentals/signup',
            { email => 'ann@example.org', business_name => 'Ann Stays',
              slug => 'ann-stays' });
is($r->{status}, 202, 'sign-up: 202, a link is mailed');
is(body_of($r)->{status}, 'pending', 'pending until the link');
is($t->psql("SELECT count(*) FROM rentals.businesses"), 0,
   'no business before the link');

$r = req('POST', '/api/auth/confirm', { token => token_of('ann@example.org') });
is($r->{status}, 200, 'the link signs ann in');
is(body_of($r)->{business}{slug}, 'ann-stays', 'and creates her business');
is(body_of($r)->{return_path}, '/owner/', 'returning to the owner area');
my $ann = $t->session_cookie($r);

for my $case (['Ann_Stays', '400 slug'], ['ab', '400 slug'],
              ['-ann', '400 slug'], ['a--b', '400 slug'],
              ['ann-stays', '409 slug']) {
    $r = req('POST', '/api/rentals/signup',
             { email => 'x@example.org', business_name => 'X',
               slug => $case->[0] });
    is(field_of($r), $case->[1], "slug '$case->[0]': $case->[1]");
}
is(field_of(req('POST', '/api/rentals/signup',
                { email => 'nope', business_name => 'X', slug => 'xyz' })),
   '400 email', 'a bad email: 400 email');
is(field_of(req('POST', '/api/rentals/signup',
                { email => 'x@example.org', slug => 'xyz' })),
   '400 business_name', 'no name: 400 business_name');
is(field_of(req('POST', '/api/rentals/signup',
                { email => 'ann@example.org', business_name => 'Again',
                  slug => 'ann-again' })),
   '409 email', 'an owner cannot sign up a second business');

# Bob is signed in when he signs up: created at once.
my $bob = $t->sign_in('bob@example.org');
$r = req('POST', '/api/rentals/signup',
         { email => 'bob@example.org', business_name => 'Bob Lets',
           slug => 'bob-lets' }, cookie => $bob);
is($r->{status}, 201, 'signed in as the address: 201 at once');

$r = req('GET', '/api/owner/business', undef, cookie => $ann);
is(body_of($r)->{slug}, 'ann-stays', 'ann: her business');
is_deeply([map { $_->{email} } @{body_of($r)->{owners}}], ['ann@example.org'],
          'one owner');

$r = req('PATCH', '/api/owner/business',
         { stripe_account => 'acct_1AnnStays' }, cookie => $ann);
is(body_of($r)->{stripe_account}, 'acct_1AnnStays', 'the Stripe account set');
is(field_of(req('PATCH', '/api/owner/business', { stripe_account => 'x' },
                cookie => $ann)), '400 stripe_account', 'checked');
is(field_of(req('PATCH', '/api/owner/business', { slug => 'new' },
                cookie => $ann)), '400 slug', 'the slug does not change');

# ------------------------------------------------------------------ invites

$r = req('POST', '/api/owner/invites', { email => 'Carol@Example.org' },
         cookie => $ann);
is($r->{status}, 201, "ann invites carol") or diag($r->{content});
$r = req('POST', '/api/auth/confirm', { token => token_of('carol@example.org') });
my $carol = $t->session_cookie($r);
is(body_of($r)->{return_path}, '/owner/', 'carol\'s link opens the owner area');
$r = req('GET', '/api/owner/business', undef, cookie => $carol);
is(body_of($r)->{slug}, 'ann-stays', 'carol is an owner of ann-stays');
is(scalar @{body_of($r)->{owners}}, 2, 'two owners');
is(req('POST', '/api/owner/invites', { email => 'carol@example.org' },
       cookie => $carol)->{status}, 200, 'inviting her again: 200, nothing new');
is(field_of(req('POST', '/api/owner/invites', { email => 'bob@example.org' },
                cookie => $ann)), '409 email',
   'an owner of another business cannot be invited');
is(field_of(req('POST', '/api/owner/invites', { email => 'bad' },
                cookie => $ann)), '400 email', 'a bad address: 400');

is(req('GET', '/api/owner/properties')->{status}, 401, 'signed out: 401');
my $dave = $t->sign_in('dave@example.org');
is(req('GET', '/api/owner/properties', undef, cookie => $dave)->{status}, 403,
   'signed in, no business: 403');

# ------------------------------------------------------------------ properties

my %sea = (name => 'Sea View', description => "Two rooms.\nA balcony.",
           address => '1 Beach Road', capacity => 4, price_minor => 12000,
           cleaning_fee_minor => 4000, currency => 'eur', min_nights => 2,
           check_in_time => '16:00', check_out_time => '10:00',
           cleaning_minutes => 240, time_zone => 'Europe/Paris',
           cleaner_email => 'clean@example.org',
           key_box_location => 'Left of the blue door');

for my $case ([{ %sea, name => '' }, '400 name'],
              [{ %sea, capacity => 0 }, '400 capacity'],
              [{ %sea, capacity => 2.5 }, '400 capacity'],
              [{ %sea, price_minor => -1 }, '400 price_minor'],
              [{ %sea, currency => 'XYZ' }, '400 currency'],
              [{ %sea, min_nights => 0 }, '400 min_nights'],
              [{ %sea, check_in_time => '4pm' }, '400 check_in_time'],
              [{ %sea, cleaning_minutes => 400 }, '400 cleaning_minutes'],
              [{ %sea, time_zone => 'Mars/Base' }, '400 time_zone'],
              [{ %sea, cleaner_email => 'x' }, '400 cleaner_email'],
              [{ %sea, pool => 1 }, '400 pool']) {
    my ($b) = @$case;
    my ($bad) = grep { !exists $sea{$_} || $b->{$_} ne $sea{$_} } sort keys %$b;
    is(field_of(req('POST', '/api/owner/properties', $b, cookie => $ann)),
       $case->[1], "property with a bad $bad: $case->[1]");
}
my %missing = %sea;
delete $missing{capacity};
is(field_of(req('POST', '/api/owner/properties', \%missing, cookie => $ann)),
   '400 capacity', 'capacity is required');

$r = req('POST', '/api/owner/properties', \%sea, cookie => $ann);
is($r->{status}, 201, 'ann adds a property');
my $pa = body_of($r)->{id};
is(body_of($r)->{currency}, 'EUR', 'currency upper-cased');
is(body_of($r)->{check_in_time}, '16:00', 'times as HH:MM');

$r = req('POST', '/api/owner/properties',
         { name => 'Bob Flat', capacity => 2, price_minor => 9000,
           currency => 'GBP' }, cookie => $bob);
my $pb = body_of($r)->{id};
ok($pb, 'bob adds a property');

$r = req('PATCH', "/api/owner/properties/$pa", { price_minor => 13000 },
         cookie => $carol);
is(body_of($r)->{price_minor}, 13000, 'carol (co-owner) changes the price');
is(body_of($r)->{name}, 'Sea View', 'other fields kept');

$r = req('GET', '/api/owner/properties', undef, cookie => $ann);
is_deeply([map { $_->{name} } @{body_of($r)->{properties}}], ['Sea View'],
          'ann lists her business\'s properties only');

# ------------------------------------------------------------------ images

my %img = map { $_ => slurp("$root/t/data/$_") } qw(cover.jpg cover.png cover.webp not.gif);

my @ids;
for my $f (qw(cover.jpg cover.png cover.webp)) {
    $r = req('POST', "/api/owner/properties/$pa/images", $img{$f},
             cookie => $ann,
             headers => { 'Content-Type' => 'application/octet-stream' });
    is($r->{status}, 201, "$f uploaded: 201");
    push @ids, body_of($r)->{id};
}
my $first = body_of(req('GET', "/api/owner/properties/$pa", undef,
                        cookie => $ann))->{images}[0];
like($first->{url}, qr{^/media/[0-9a-f]{2}/[0-9a-f]{64}\.jpg$}, 'stored by its hash');
is($first->{thumbnails}{w320}, "/media/w320/" . substr($first->{url}, 7),
   'a 320 px thumbnail URL');

$r = req('POST', "/api/owner/properties/$pa/images", $img{'cover.jpg'},
         cookie => $ann);
is($r->{status}, 200, 'the same image again: 200, the existing one');
is(body_of($r)->{id}, $ids[0], 'same id');

$r = req('POST', "/api/owner/properties/$pa/images", $img{'not.gif'},
         cookie => $ann);
is($r->{status}, 415, 'a GIF is refused (type sniffed): 415');
$r = req('POST', "/api/owner/properties/$pa/images", "GIF89a" . ("x" x 100),
         cookie => $ann, headers => { 'Content-Type' => 'image/jpeg' });
is($r->{status}, 415, 'whatever Content-Type says');

for my $w (qw(320 960)) {
    my $path = $first->{thumbnails}{"w$w"};
    $r = $t->get($path);
    is($r->{status}, 200, "w$w thumbnail: 200");
    is($r->{headers}{'x-cache'}, 'MISS', "w$w: made the first time");
    is($t->get($path)->{headers}{'x-cache'}, 'HIT', "w$w: cached after");
}

$r = req('PUT', "/api/owner/properties/$pa/images/order",
         { ids => [reverse @ids] }, cookie => $ann);
is_deeply([map { $_->{id} } @{body_of($r)->{images}}], [reverse @ids],
          'images reordered');
is(field_of(req('PUT', "/api/owner/properties/$pa/images/order",
                { ids => [$ids[0]] }, cookie => $ann)), '400 ids',
   'the order must name every image');
is(field_of(req('PUT', "/api/owner/properties/$pa/images/order",
                { ids => [@ids, $ids[0]] }, cookie => $ann)), '400 ids',
   'once');

$r = $t->get('/api/b/ann-stays');
is($r->{status}, 200, 'the public site');
my $pub = body_of($r)->{properties}[0];
is_deeply([map { $_->{id} } @{$pub->{images}}], [reverse @ids],
          'photos in the owner\'s order');
ok(!exists $pub->{key_box_location} && !exists $pub->{cleaner_email},
   'no key box or cleaner on the public site');
is($t->get('/api/b/no-such-site')->{status}, 404, 'an unknown slug: 404');

# ------------------------------------------------------------------ tenant matrix

# A booking of ann's, for the booking endpoints.
$r = req('POST', "/api/owner/properties/$pa/bookings",
         { check_in => '2099-05-01', check_out => '2099-05-04',
           guest_name => 'Phone guest' }, cookie => $ann);
is($r->{status}, 201, 'ann takes a manual booking');
my $bk = body_of($r)->{id};

my $before = $t->psql("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ("
                      . "SELECT row(p.*)::text AS t FROM rentals.properties p "
                      . "UNION ALL SELECT row(i.*)::text FROM rentals.property_images i "
                      . "UNION ALL SELECT row(b.*)::text FROM rentals.bookings b) x");

my @matrix = (
    ['GET', "/api/owner/properties/$pa"],
    ['PATCH', "/api/owner/properties/$pa", { name => 'Mine now' }],
    ['DELETE', "/api/owner/properties/$pa"],
    ['POST', "/api/owner/properties/$pa/images", $img{'cover.png'}],
    ['PUT', "/api/owner/properties/$pa/images/order", { ids => [@ids] }],
    ['DELETE', "/api/owner/properties/$pa/images/$ids[0]"],
    ['POST', "/api/owner/properties/$pa/bookings",
     { check_in => '2099-06-01', check_out => '2099-06-03' }],
    ['GET', "/api/owner/bookings?property=$pa"],
    ['POST', "/api/owner/bookings/$bk/cancel"],
);
for my $m (@matrix) {
    my ($method, $path, $body) = @$m;
    $r = req($method, $path, $body, cookie => $bob);
    is($r->{status}, 404, "bob: $method $path -> 404");
}
# and the other way round, on bob's property
for my $m (['GET', "/api/owner/properties/$pb"],
           ['PATCH', "/api/owner/properties/$pb", { name => 'x' }],
           ['DELETE', "/api/owner/properties/$pb"]) {
    is(req($m->[0], $m->[1], $m->[2], cookie => $carol)->{status}, 404,
       "carol: $m->[0] $m->[1] -> 404");
}
is_deeply(body_of(req('GET', '/api/owner/bookings', undef, cookie => $bob))
              ->{bookings}, [], 'bob\'s booking list has none of ann\'s');
is($t->psql("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ("
            . "SELECT row(p.*)::text AS t FROM rentals.properties p "
            . "UNION ALL SELECT row(i.*)::text FROM rentals.property_images i "
            . "UNION ALL SELECT row(b.*)::text FROM rentals.bookings b) x"),
   $before, 'and nothing of ann\'s changed');

# ------------------------------------------------------------------ deleting

is(req('DELETE', "/api/owner/properties/$pa/images/$ids[1]", undef,
       cookie => $ann)->{status}, 200, 'ann deletes a photo');
is(req('DELETE', "/api/owner/properties/$pa", undef, cookie => $ann)->{status},
   409, 'a property with stays to come cannot be deleted');
is(req('POST', "/api/owner/bookings/$bk/cancel", undef,
       cookie => $ann)->{status}, 200, 'the booking cancelled');
is(req('DELETE', "/api/owner/properties/$pa", undef, cookie => $ann)->{status},
   200, 'then it can');
is(req('GET', "/api/owner/properties/$pa", undef, cookie => $ann)->{status},
   404, 'gone');
is($t->psql("SELECT count(*) FROM rentals.property_images"), 0,
   'with its photos');

done_testing;
