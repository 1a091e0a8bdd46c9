#!/usr/bin/perl

# platform_upload (ngx_platform_upload.c, docs/media.md) and the event cover
# (sql/011_media.sql, conf/api/events.conf): real JPEG, PNG and WebP files
# (t/data/, made with ffmpeg) are stored content-addressed with the type
# sniffed from their bytes; GIF, text and an EXE named .jpg are 415 and
# leave nothing behind; over max_size is 413 (Content-Length and chunked);
# a body nginx spooled to a temporary file works; the cover of another
# organisation's event is 404.  /media/<name> serves the exact bytes with
# immutable caching, and /media/w320|w960/<name> thumbnails are made once
# by image_filter behind proxy_cache (the second fetch is a cache HIT).
# nginx -t refuses a DIR that cannot be a directory.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use File::Basename qw(dirname);
use File::Find ();

my $t = Test::Platform->new;
my $dir = $t->testdir;
my $root = $t->root;

# image_filter from Debian's libnginx-mod-http-image-filter; the SAN build
# makes its own next to nginx (an ASan binary loads either).
my $mod = $ENV{PLATFORM_MODULE} || "$root/build/ngx_platform_module.so";
my ($image_filter) = grep { -f $_ }
    (($ENV{SAN} // '') eq '1'
         ? (dirname($mod) . '/objs/ngx_http_image_filter_module.so') : (),
     '/usr/lib/nginx/modules/ngx_http_image_filter_module.so');

plan skip_all => 'no image_filter module (make deps installs '
                 . 'libnginx-mod-http-image-filter)'
    unless $image_filter;

$t->key_file;    # session.key in the test directory

$t->psql(<<'EOF');
CREATE FUNCTION api.t_upload(name text, type text, size bigint, width int,
                             height int) RETURNS json
LANGUAGE sql AS $$
    SELECT json_build_object('name', name, 'type', type, 'size', size,
                             'width', width, 'height', height)
$$;
EOF

$t->main_conf("load_module $image_filter;");

my $name_re = '[0-9a-f]{2}/[0-9a-f]{64}\.(?:jpg|png|webp)';

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

        @{[ $t->api_conf(qw(auth events)) ]}

        location /media/ {
            alias %%TESTDIR%%/var/media/;
            expires max;
            add_header Cache-Control "public, immutable";
        }

        location ~ "^/media/(w320|w960)/($name_re)\$" {
            proxy_pass http://127.0.0.1:%%PORT2%%/\$1/\$2;
            proxy_cache thumbs;
            proxy_cache_valid 200 365d;
            proxy_cache_lock on;
            expires max;
            add_header Cache-Control "public, immutable";
            add_header X-Cache \$upstream_cache_status;
        }

        location = /up {
            client_max_body_size 1m;
            platform_upload up max_size=200k;
            platform_query PUT  api.t_upload(\$platform_upload_name,
                \$platform_upload_type, \$platform_upload_size::bigint,
                \$platform_upload_width::int, \$platform_upload_height::int);
            platform_query POST api.t_upload(\$platform_upload_name,
                \$platform_upload_type, \$platform_upload_size::bigint,
                \$platform_upload_width::int, \$platform_upload_height::int);
            platform_query GET  api.t_upload(\$platform_upload_name,
                \$platform_upload_type, \$platform_upload_size::bigint,
                \$platform_upload_width::int, \$platform_upload_height::int);
        }

        location = /up-png {
            platform_upload up types=png;
            platform_query PUT api.t_upload(\$platform_upload_name,
                \$platform_upload_type, \$platform_upload_size::bigint,
                \$platform_upload_width::int, \$platform_upload_height::int);
        }

        location = /up-small-buffer {
            client_body_buffer_size 8k;
            client_max_body_size 1m;
            platform_upload up;
            platform_query PUT api.t_upload(\$platform_upload_name,
                \$platform_upload_type, \$platform_upload_size::bigint,
                \$platform_upload_width::int, \$platform_upload_height::int);
        }
    }
EOF

$t->run;

my $port = $t->port;
my $origin = "http://127.0.0.1:$port";
my $json = JSON::PP->new->canonical;

# ------------------------------------------------------------------ helpers

sub slurp {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or die "$f: $!\n";
    local $/;
    return scalar <$fh>;
}

my %img = map { $_ => slurp("$root/t/data/$_") }
    qw(cover.jpg cover.png cover.webp lossless.webp big.jpg not.gif);

sub body_of { $t->json($_[0]) || {} }

sub put {
    my ($path, $bytes, %o) = @_;
    my %h = ('Content-Type' => $o{type} // 'application/octet-stream');
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin;
    }
    return $t->req($o{method} // 'PUT', $path, headers => \%h,
                   body => $bytes);
}

sub req {
    my ($method, $path, $body, %o) = @_;
    my %h;
    if (defined $o{cookie}) {
        $h{Cookie} = "platform_session=$o{cookie}";
        $h{Origin} = $origin;
    }
    return $t->req($method, $path, headers => \%h,
                   defined $body ? (body => $json->encode($body)) : ());
}

# The files below a directory, as "xx/....ext" names.
sub stored {
    my ($d) = @_;
    my @f;
    return () unless -d $d;
    File::Find::find({ no_chdir => 1, wanted => sub {
        push @f, substr($_, length($d) + 1) if -f $_;
    } }, $d);
    return sort @f;
}

# Width and height from an image's header bytes (PNG IHDR, JPEG SOFn,
# WebP VP8/VP8L/VP8X), as the module reads them.
sub dimensions {
    my ($b) = @_;
    if (substr($b, 0, 8) eq "\x89PNG\r\n\x1a\n") {
        return unpack('NN', substr($b, 16, 8));
    }
    if (substr($b, 0, 3) eq "\xff\xd8\xff") {
        my $i = 2;
        while ($i + 9 <= length $b) {
            my ($ff, $m, $len) = unpack('CCn', substr($b, $i, 4));
            return unless $ff == 0xff;
            if ($m >= 0xc0 && $m <= 0xcf && $m != 0xc4 && $m != 0xc8
                && $m != 0xcc)
            {
                my ($h, $w) = unpack('nn', substr($b, $i + 5, 4));
                return ($w, $h);
            }
            $i += 2 + $len;
        }
        return;
    }
    if (substr($b, 0, 4) eq 'RIFF' && substr($b, 8, 4) eq 'WEBP') {
        my $c = substr($b, 12, 4);
        if ($c eq 'VP8 ') {
            my ($w, $h) = unpack('vv', substr($b, 26, 4));
            return ($w & 0x3fff, $h & 0x3fff);
        }
        if ($c eq 'VP8L') {
            my $v = unpack('V', substr($b, 21, 4));
            return (($v & 0x3fff) + 1, (($v >> 14) & 0x3fff) + 1);
        }
        if ($c eq 'VP8X') {
            my @x = unpack('C6', substr($b, 24, 6));
            return (($x[0] | $x[1] << 8 | $x[2] << 16) + 1,
                    ($x[3] | $x[4] << 8 | $x[5] << 16) + 1);
        }
    }
    return;
}

# ------------------------------------------------------------------ the directive

my $up = "$dir/up";
ok(-d $up, 'platform_upload created its directory (relative to the prefix)');

my %name;

for my $case (['cover.jpg', 'image/jpeg', 'jpg', 1200, 800],
              ['cover.png', 'image/png', 'png', 1200, 800],
              ['cover.webp', 'image/webp', 'webp', 1200, 800],
              ['lossless.webp', 'image/webp', 'webp', 300, 200])
{
    my ($f, $type, $ext, $w, $h) = @$case;

    # a lying Content-Type: never looked at
    my $r = put('/up', $img{$f}, type => 'text/plain');
    is($r->{status}, 200, "$f: 200 whatever the Content-Type says");

    my $b = body_of($r);
    my $sha = sha256_hex($img{$f});
    is($b->{name}, substr($sha, 0, 2) . "/$sha.$ext",
       "$f: named by its SHA-256");
    is($b->{type}, $type, "$f: type $type from the magic bytes");
    is($b->{size}, length $img{$f}, "$f: size");
    is("$b->{width}x$b->{height}", "${w}x$h",
       "$f: dimensions from the headers");

    my $file = "$up/" . ($b->{name} // 'none');
    ok(-f $file && slurp($file) eq $img{$f}, "$f: stored byte for byte");
    is(sprintf('%o', (stat $file)[2] & 0777), '644', "$f: mode 0644");

    $name{$f} = $b->{name};
}

my @before = stored($up);
is(scalar @before, 4, 'four files stored');

my $r = put('/up', $img{'cover.jpg'}, method => 'POST', type => 'image/png');
is(body_of($r)->{name}, $name{'cover.jpg'}, 'the same bytes again (POST): '
   . 'the same name');
is_deeply([stored($up)], \@before, 'and no new file');

for my $case (['not.gif', $img{'not.gif'}, 'image/gif'],
              ['text', "hello, this is not an image\n", 'image/jpeg'],
              ['an EXE named .jpg', "MZ\x90\x00\x03" . ("\x00" x 200),
               'image/jpeg'],
              ['a PNG signature cut short', "\x89PNG\r\n", 'image/png'],
              ['RIFF but not WEBP', "RIFF\x10\x00\x00\x00WAVEfmt ",
               'image/webp'])
{
    my ($what, $bytes, $type) = @$case;
    $r = put('/up', $bytes, type => $type);
    is($r->{status}, 415, "$what: 415");
    is(body_of($r)->{error}{code}, 'unsupported_media_type',
       "$what: the module's JSON error");
}

$r = $t->req('PUT', '/up', headers => { 'Content-Length' => 0 });
is($r->{status}, 415, 'an empty body: 415');

$r = put('/up-png', $img{'cover.jpg'}, type => 'image/png');
is($r->{status}, 415, 'types=png: a JPEG is 415');
like(body_of($r)->{error}{message} // '', qr/\(png\)/,
     'the message names the accepted types');
is(body_of(put('/up-png', $img{'cover.png'}))->{name}, $name{'cover.png'},
   'types=png: a PNG is stored');

my $over = "\xff\xd8\xff\xe0" . ("\x00" x (200 * 1024));
$r = put('/up', $over, type => 'image/jpeg');
is($r->{status}, 413, 'over max_size (Content-Length): 413');
is(body_of($r)->{error}{code}, 'body_too_large', 'with the JSON error');

my @chunks = ($over);
$r = $t->req('PUT', '/up', headers => { 'Content-Type' => 'image/jpeg' },
             body => sub { shift @chunks }, fresh => 1);
is($r->{status}, 413, 'over max_size (chunked): 413');

@chunks = ($img{'cover.webp'});
$r = $t->req('PUT', '/up', headers => { 'Content-Type' => 'image/jpeg' },
             body => sub { shift @chunks }, fresh => 1);
is(body_of($r)->{name}, $name{'cover.webp'}, 'a chunked body under the '
   . 'limit is stored');

is_deeply([stored($up)], \@before, 'refused bodies left nothing behind');

ok(length $img{'big.jpg'} > 100_000, 'big.jpg is over 100 KB');
$r = put('/up-small-buffer', $img{'big.jpg'});
is($r->{status}, 200, 'client_body_buffer_size 8k and a 140 KB image: 200');
my $big = body_of($r)->{name} // 'none';
ok(-f "$up/$big" && slurp("$up/$big") eq $img{'big.jpg'},
   'the spooled body was moved into place intact');

$r = $t->get('/up');
is(body_of($r)->{name}, undef, 'GET: no upload, the variables are empty');

my @tmp = grep { -f } glob("$dir/client_body_temp/*");
is(scalar @tmp, 0, 'no temporary body file is left');

# ------------------------------------------------------------------ covers

my $ann = $t->sign_in('ann@example.org');
my $bob = $t->sign_in('bob@example.org');

$r = req('POST', '/api/orgs', { name => 'Org A' }, cookie => $ann);
my $org_a = body_of($r)->{id};
$ann = $t->session_cookie($r);
$r = req('POST', '/api/orgs', { name => 'Org B' }, cookie => $bob);
my $org_b = body_of($r)->{id};
$bob = $t->session_cookie($r);
ok($org_a && $org_b && $ann && $bob, 'ann and bob organise Org A and B');

$r = req('POST', "/api/orgs/$org_a/events",
         { title => 'Cover test', business_type => 'meetup',
           starts_at => '2031-03-10T09:00:00Z',
           ends_at => '2031-03-10T17:00:00Z',
           cover_url => 'https://example.org/old.png' }, cookie => $ann);
my $ev = body_of($r)->{id};
ok($ev, 'ann creates an event');

my $cover = "/api/orgs/$org_a/events/$ev/cover";
my $media = "$dir/var/media";

$r = put($cover, $img{'cover.jpg'}, type => 'image/jpeg');
is($r->{status}, 401, 'a cover needs a session');

$r = put($cover, $img{'cover.jpg'}, cookie => $ann, type => 'image/jpeg');
is($r->{status}, 200, 'PUT cover (JPEG): 200');
my $jpg = $name{'cover.jpg'};
is(body_of($r)->{cover_url}, "/media/$jpg", 'the event JSON shows the cover '
   . 'URL');
is(body_of(req('GET', "/api/orgs/$org_a/events/$ev", undef,
               cookie => $ann))->{cover_url},
   "/media/$jpg", 'and so does GET of the event');

is($t->psql("SELECT m.content_type || ' ' || m.size || ' ' || m.width "
            . "|| 'x' || m.height FROM app.events AS e "
            . "JOIN app.media AS m ON m.id = e.cover_media_id "
            . "WHERE e.id = $ev"),
   'image/jpeg ' . length($img{'cover.jpg'}) . ' 1200x800',
   'app.media has the type, size and dimensions');

$r = put($cover, $img{'cover.jpg'}, cookie => $ann);
is(body_of($r)->{cover_url}, "/media/$jpg", 'the same image twice: the '
   . 'same name');
is($t->psql("SELECT count(*) FROM app.media"), 1, 'and one media row');

$r = $t->get("/media/$jpg");
is($r->{status}, 200, 'GET /media/<name>: 200');
ok($r->{content} eq $img{'cover.jpg'}, 'the exact bytes');
my $cc = $r->{headers}{'cache-control'} // '';
$cc = join(', ', @$cc) if ref $cc;
like($cc, qr/immutable/, 'Cache-Control: immutable');
like($cc, qr/max-age=\d{8,}/, 'and a max-age of years');

for my $w (320, 960) {
    $r = $t->get("/media/w$w/$jpg");
    is($r->{status}, 200, "w$w thumbnail: 200");
    is((dimensions($r->{content}))[0], $w, "w$w thumbnail: $w wide");
    is($r->{headers}{'x-cache'}, 'MISS', "w$w: made the first time");
    my $again = $t->get("/media/w$w/$jpg");
    is($again->{headers}{'x-cache'}, 'HIT', "w$w: a cache HIT the second");
    ok($again->{content} eq $r->{content}, "w$w: the same bytes");
}

for my $f ('cover.png', 'cover.webp') {
    $r = put($cover, $img{$f}, cookie => $ann);
    is(body_of($r)->{cover_url}, "/media/$name{$f}", "PUT cover ($f): 200");
    ok(slurp("$media/$name{$f}") eq $img{$f}, "$f stored in var/media");
    $r = $t->get("/media/w320/$name{$f}");
    is($r->{status}, 200, "$f: w320 thumbnail");
    is(substr($r->{content}, 0, 4), substr($img{$f}, 0, 4),
       "$f: the thumbnail keeps the format");
    is((dimensions($r->{content}))[0], 320, "$f: 320 wide");
}

my @media = stored($media);
$r = put($cover, $img{'not.gif'}, cookie => $ann, type => 'image/jpeg');
is($r->{status}, 415, 'a GIF cover: 415');
$r = put($cover, "MZ\x90\x00" . ("\x00" x 100), cookie => $ann,
         type => 'image/jpeg');
is($r->{status}, 415, 'an EXE cover named .jpg: 415');
is_deeply([stored($media)], \@media, 'nothing stored');
is(body_of(req('GET', "/api/orgs/$org_a/events/$ev", undef,
               cookie => $ann))->{cover_url},
   "/media/$name{'cover.webp'}", 'the cover is unchanged');

$r = $t->req('PUT', $cover,
             headers => { Cookie => "platform_session=$ann",
                          Origin => $origin, 'Content-Type' => 'image/jpeg' },
             body => "\xff\xd8\xff" . ("\x00" x (5 * 1024 * 1024)));
is($r->{status}, 413, 'a cover over 5 MB: 413');

$r = put("/api/orgs/$org_b/events/$ev/cover", $img{'cover.jpg'},
         cookie => $bob);
is($r->{status}, 404, "another organisation's event: 404");
$r = put($cover, $img{'cover.jpg'}, cookie => $bob);
is($r->{status}, 403, "bob naming Org A: 403");

$r = req('PATCH', "/api/orgs/$org_a/events/$ev",
         { cover_url => 'https://example.org/new.png' }, cookie => $ann);
is(body_of($r)->{cover_url}, 'https://example.org/new.png',
   'a cover address set by PATCH replaces the upload');
is($t->psql("SELECT cover_media_id IS NULL FROM app.events WHERE id = $ev"),
   't', 'and drops the media reference');

put($cover, $img{'cover.jpg'}, cookie => $ann);
$r = req('DELETE', $cover, undef, cookie => $ann);
is($r->{status}, 200, 'DELETE cover: 200');
is(body_of($r)->{cover_url}, undef, 'no cover any more');

$t->psql("UPDATE app.media SET created_at = now() - interval '2 days'");
is($t->psql("SELECT maintenance.media_purge()->>'deleted'"), 3,
   'media_purge deletes the rows no event refers to');

$t->stop;

# ------------------------------------------------------------------ nginx -t

open(my $fh, '>', "$dir/plain-file") or die;
close $fh;

for my $case (['/dev/null/media', qr/platform_upload: cannot create the directory "\/dev\/null\/media"/,
               'a DIR that cannot be created'],
              ["$dir/plain-file", qr/is not a directory/,
               'a DIR that is a file'],
              ['media max_size=big', qr/invalid parameter "max_size=big"/,
               'a bad max_size'],
              ['media types=gif', qr/unknown type "gif"/, 'an unknown type'])
{
    my ($arg, $re, $what) = @$case;
    my $u = Test::Platform->new;
    $u->http_conf(<<"EOF");
    platform_pg main { server "host=/nonexistent dbname=x"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /u {
            platform_upload $arg;
            platform_query PUT api.t_upload(name => \$platform_upload_name);
        }
    }
EOF
    my ($ok, $output) = $u->nginx_t;
    ok(!$ok, "nginx -t: $what fails");
    like($output, $re, "nginx -t: $what: a clear message");
}

done_testing;
