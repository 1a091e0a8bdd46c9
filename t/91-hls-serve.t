#!/usr/bin/perl

# HLS serving (issue 6, ngx_platform_hls.c, conf/api/hls.conf, docs/hls.md):
# types, Cache-Control, ETag/304, Range, CORS for ticket holders and
# organisers; 401 without a session, 403 without a ticket; signed links
# (from GET /api/events/{id}/stream) work without the cookie, for ffprobe
# too, and expired or altered ones are 403; segments that left the playlist
# are removed after the grace period; an encoder that stops without ENDLIST
# gets it after platform_hls_idle; over platform_hls_max_size the oldest
# removable segments go first and an error is logged.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);
use Test::Platform;
use Test::Platform::HLS qw(hls_setup ffmpeg_push wait_until slurp);

my $t = Test::Platform->new;
$t->ignore_log(qr/over platform_hls_max_size/);

my $s = hls_setup($t, extra => <<'EOF', server => <<'EOF');
    platform_hls_idle     2s;
    platform_hls_grace    1s;
    platform_hls_max_size 300k;
EOF
        location ~ "^/cors/(\d+)/([^/]+)$" {
            platform_auth optional;
            platform_hls event=$1 name=$2
                         ingest=/_hls/ingest/$1 watch=/_hls/watch/$1;
            platform_hls_cors https://app.example.org;
            alias $platform_hls_store/$1/$2;
        }
EOF
my ($ev, $key, %cookie) = ($s->{ev}, $s->{key}, %{$s->{cookie}});
my $store = "$s->{store}/$ev";
my %auth = (Authorization => "Bearer $key");

sub put {
    my ($name, $body) = @_;
    return $t->req('PUT', "/live/$ev/$name", body => $body,
                   headers => { 'content-type' => 'application/octet-stream',
                                %auth }, fresh => 1);
}

sub as {
    my ($who, $path, %h) = @_;
    return $t->get($path, headers => { %h, $who ? (Cookie =>
                                       "platform_session=$cookie{$who}") : () },
                   fresh => 1);
}

my $seg = join('', map { chr($_ % 251) } 1 .. 100_000);
my $playlist = <<'M3U8';
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:1
#EXT-X-MEDIA-SEQUENCE:1
#EXTINF:1.000000,
seg1.ts
#EXTINF:1.000000,
seg2.ts
M3U8

is(put('seg1.ts', $seg)->{status}, 201, 'segment 1 pushed');
is(put('seg2.ts', $seg)->{status}, 201, 'segment 2 pushed');
is(put('init.mp4', 'init')->{status}, 201, 'an fMP4 init section pushed');
is(put('a.m4s', 'm4s')->{status}, 201, 'an fMP4 segment pushed');
is(put('index.m3u8', $playlist)->{status}, 201, 'the playlist pushed');

# ------------------------------------------------------------------ who

is(as(undef, "/live/$ev/index.m3u8")->{status}, 401, 'no session: 401');
is(as('out', "/live/$ev/index.m3u8")->{status}, 403, 'no ticket: 403');
is(as('out', "/live/$ev/seg1.ts")->{status}, 403, '... for segments too');
is(as('org', "/live/$ev/index.m3u8")->{status}, 200, 'the organiser: 200');

my $r = as('p1', "/live/$ev/index.m3u8");
is($r->{status}, 200, 'a ticket holder: 200');
is($r->{content}, $playlist, '... the playlist as pushed');
is($r->{headers}{'content-type'}, 'application/vnd.apple.mpegurl',
   '... application/vnd.apple.mpegurl');
is($r->{headers}{'cache-control'}, 'no-cache', '... Cache-Control: no-cache');
ok(!exists $r->{headers}{'access-control-allow-origin'},
   '... no CORS header unless configured');

$r = as('p1', "/live/$ev/seg1.ts");
is($r->{status}, 200, 'a segment: 200');
is($r->{content}, $seg, '... the bytes as pushed');
is($r->{headers}{'content-type'}, 'video/mp2t', '... video/mp2t');
is($r->{headers}{'cache-control'}, 'max-age=31536000, immutable',
   '... immutable');
my $etag = $r->{headers}{etag};
ok($etag, '... with an ETag');

is(as('p1', "/live/$ev/init.mp4")->{headers}{'content-type'}, 'video/mp4',
   'init.mp4: video/mp4');
is(as('p1', "/live/$ev/a.m4s")->{headers}{'content-type'},
   'video/iso.segment', '.m4s: video/iso.segment');

$r = as('p1', "/live/$ev/seg1.ts", 'If-None-Match' => $etag);
is($r->{status}, 304, 'If-None-Match: 304');

$r = as('p1', "/live/$ev/seg1.ts", Range => 'bytes=10-19');
is($r->{status}, 206, 'Range: 206');
is($r->{content}, substr($seg, 10, 10), '... the bytes asked for');

$r = $t->req('HEAD', "/live/$ev/seg1.ts",
             headers => { Cookie => "platform_session=$cookie{p1}" });
is($r->{status}, 200, 'HEAD: 200');

is(as('p1', "/live/$ev/nope.ts")->{status}, 404, 'a missing segment: 404');

$r = as('p1', "/cors/$ev/seg1.ts", Origin => 'https://app.example.org');
is($r->{headers}{'access-control-allow-origin'}, 'https://app.example.org',
   'CORS: the configured origin');
is($r->{headers}{'access-control-allow-credentials'}, 'true',
   '... with credentials');

# ------------------------------------------------------------------ links

$r = as('p1', "/api/events/$ev/stream");
my $st = $t->json($r) // {};
is($r->{status}, 200, 'the stream state for a ticket holder');
like($st->{signed_playlist} // '',
     qr{^/live/$ev/s/\d+\.[A-Za-z0-9_-]{43}/index\.m3u8$},
     '... with a signed playlist link');
$r = as('out', "/api/events/$ev/stream");
is_deeply([$r->{status}, ($t->json($r) // {})->{watch},
           ($t->json($r) // {})->{signed_playlist}],
          [200, JSON::PP::false, undef],
          'without a ticket: "watch": false and no link');
is(as(undef, "/api/events/$ev/stream")->{status}, 401,
   'signed out: 401');

my $signed = $st->{signed_playlist} // '/none';
(my $sdir = $signed) =~ s{index\.m3u8$}{};

is(as(undef, $signed)->{status}, 200, 'the signed link works without cookie');
is(as(undef, "${sdir}seg2.ts")->{content}, $seg,
   '... and so do segments next to it');

(my $other = $signed) =~ s{^/live/$ev/}{'/live/' . ($ev + 1) . '/'}e;
is(as(undef, $other)->{status}, 403, "another event's path: 403");

(my $bad = $signed) =~ s{\.(.)}{'.' . ($1 eq 'A' ? 'B' : 'A')}e;
is(as(undef, $bad)->{status}, 403, 'an altered signature: 403');

(my $late = $signed) =~ s{/s/(\d+)\.}{'/s/' . ($1 + 1) . '.'}e;
is(as(undef, $late)->{status}, 403, 'a changed expiry: 403');

is(as(undef, "/live/$ev/s/1000000000.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG/index.m3u8")->{status},
   403, 'an expired link: 403');

# ------------------------------------------------------------------ sweep

# seg1 leaves the window; seg3 comes in.
is(put('seg3.ts', $seg)->{status}, 201, 'segment 3 pushed');
$playlist =~ s/MEDIA-SEQUENCE:1/MEDIA-SEQUENCE:2/;
$playlist =~ s/#EXTINF:1.000000,\nseg1.ts\n//;
$playlist .= "#EXTINF:1.000000,\nseg3.ts\n";
is(put('index.m3u8', $playlist)->{status}, 204, 'the playlist replaced');

ok(wait_until(sub { !-e "$store/seg1.ts" }, 30),
   'a segment out of the playlist is removed after the grace period');
ok(-e "$store/seg2.ts" && -e "$store/seg3.ts", 'the window stays');

ok(wait_until(sub { (slurp("$store/index.m3u8") // '') =~ /ENDLIST/ }, 30),
   'no PUT for platform_hls_idle: ENDLIST appended');
like(slurp("$store/index.m3u8"), qr/\Q$playlist\E#EXT-X-ENDLIST\n\z/,
     '... after the playlist as it was');
is(($t->json(as('p1', "/api/events/$ev/stream")) // {})->{live},
   JSON::PP::false, '... offline');

# ------------------------------------------------------------------ full

# Recording keeps segments past the grace period; over 300k the oldest
# segments no live playlist names go first.
$r = $t->req('PATCH', "/api/orgs/$s->{org}/events/$ev/stream",
             body => '{"record": true}',
             headers => { Cookie => "platform_session=$cookie{org}",
                          Origin => 'http://127.0.0.1:' . $t->port });
is($r->{status}, 200, 'recording on');

$playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:10\n"
          . "#EXTINF:1.0,\nw1.ts\n";
ok(wait_until(sub { put('index.m3u8', $playlist); -e "$store/.record" }, 30),
   '... seen by the next playlist PUT');
for my $n (1 .. 3) {
    is(put("old$n.ts", $seg)->{status}, 201, "old$n pushed");
    sleep 1.1;    # distinct modification times
}
is(put('w1.ts', $seg)->{status}, 201, 'the live segment pushed');
is(put('index.m3u8', $playlist)->{status}, 204, 'a new live playlist');

ok(wait_until(sub { !-e "$store/old1.ts" }, 30),
   'over max_size: the oldest segment is dropped');
ok(-e "$store/w1.ts", 'the live window is kept');
ok(wait_until(sub { $t->error_log =~ /over platform_hls_max_size/ }, 10),
   '... and an error is logged');

done_testing;
