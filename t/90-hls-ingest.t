#!/usr/bin/perl

# HLS ingest (issue 6, ngx_platform_hls.c, conf/api/hls.conf, docs/hls.md):
# the organiser reads the ingest key; a missing, wrong, or other event's
# key is refused (401/403) with nothing written; odd names and traversal
# are 400, oversize 413; ffmpeg pushes a live test source with PUT and
# DELETE; while it pushes, ffprobe with a ticket holder's cookie reads the
# live playlist and decodes H.264 + AAC, the stream is "live" for the page;
# old segments leave the disk; at the end the playlist has ENDLIST and the
# stream is offline; a rotated key stops working.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);
use Test::Platform;
use Test::Platform::HLS qw(hls_setup ffmpeg_push wait_until slurp);

plan skip_all => 'ffmpeg and ffprobe are needed'
    unless grep({ -x "$_/ffmpeg" } split /:/, $ENV{PATH})
           && grep({ -x "$_/ffprobe" } split /:/, $ENV{PATH});

my $t = Test::Platform->new;
my $s = hls_setup($t);
my ($ev, $key, %cookie) = ($s->{ev}, $s->{key}, %{$s->{cookie}});
my $json = JSON::PP->new->canonical;
my $store = "$s->{store}/$ev";

sub put {
    my ($name, $body, %h) = @_;
    return $t->req('PUT', "/live/$ev/$name", body => $body,
                   headers => { 'content-type' => 'application/octet-stream',
                                %h }, fresh => 1);
}

sub as {
    my ($who, $path) = @_;
    my $r = $t->get($path, headers => { Cookie => "platform_session="
                                                  . $cookie{$who} });
    return ($r, $t->json($r));
}

# ------------------------------------------------------------------ the key

like($key, qr/^[0-9a-f]{64}$/, 'the organiser reads the ingest key');

my ($r) = as('p1', "/api/orgs/$s->{org}/events/$ev/stream");
is($r->{status}, 403, 'a ticket holder cannot read it');

# ------------------------------------------------------------------ refused

$r = put('index0.ts', 'x' x 1000);
is($r->{status}, 401, 'no key: 401');
like($r->{content}, qr/"code":"unauthenticated"/, '... JSON error');

$r = put('index0.ts', 'x' x 1000, Authorization => 'Bearer ' . ('0' x 64));
is($r->{status}, 403, 'wrong key: 403');

$r = $t->req('PUT', '/live/' . ($ev + 1) . '/index0.ts', body => 'x',
             headers => { Authorization => "Bearer $key" }, fresh => 1);
is($r->{status}, 403, "another event's key: 403");

$r = $t->req('DELETE', "/live/$ev/index0.ts",
             headers => { Authorization => 'Bearer nope' }, fresh => 1);
is($r->{status}, 403, 'DELETE with a wrong key: 403');

ok(!-e $store, 'nothing written for refused requests');

my %auth = (Authorization => "Bearer $key");

for my $bad ('a.b.ts', 'x.exe', '.hidden.ts', 'index.m3u8x', "sp%20ace.ts",
             'x' x 65 . '.ts', 'vod.m3u8', 'nodot')
{
    $r = put($bad, 'x', %auth);
    is($r->{status}, 400, "name $bad: 400");
}

for my $path ("/live/$ev/sub/x.ts", "/live/$ev/%2e%2e%2fx.ts",
              "/live/abc/x.ts")
{
    $r = $t->req('PUT', $path, body => 'x', headers => \%auth, fresh => 1);
    is($r->{status}, 400, "$path: 400");
}

# nginx folds this one to /etc/passwd, outside /live/: not ours to answer,
# and nothing may be written.
$r = $t->req('PUT', "/live/$ev/..%2F..%2F..%2Fetc%2Fpasswd", body => 'x',
             headers => \%auth, fresh => 1);
like($r->{status}, qr/^4/, 'traversal out of /live/: refused');

ok(!-e $store || !glob("$store/*"), 'nothing written for odd names');

$r = put('big.ts', 'x' x (16 * 1024 * 1024 + 1), %auth);
is($r->{status}, 413, 'a segment over 16m: 413');

$r = put('big.m3u8', "#EXTM3U\n" . ('#' x (300 * 1024)), %auth);
is($r->{status}, 413, 'a playlist over 256k: 413');

ok(!-e "$store/big.ts" && !-e "$store/big.m3u8", '... not written');

$r = $t->req('PATCH', "/live/$ev/index0.ts", body => 'x', headers => \%auth,
             fresh => 1);
is($r->{status}, 405, 'PATCH: 405');

# ------------------------------------------------------------------ a push

my ($state) = (as('p1', "/api/events/$ev/stream"))[1];
is($state->{live}, JSON::PP::false, 'offline before the push');

my $pid = ffmpeg_push($t, $ev, $key, seconds => 8);

my $pl = wait_until(sub {
    my $r = $t->get("/live/$ev/index.m3u8",
                    headers => { Cookie => "platform_session=$cookie{p1}" });
    return $r->{status} == 200 && $r->{content} =~ /index2\.ts/
           ? $r->{content} : undef;
}, 60);

ok($pl, 'the live playlist is served to a ticket holder while pushing')
    or diag(slurp($t->testdir . '/ffmpeg.log'));
unlike($pl // '', qr/ENDLIST/, '... without ENDLIST');

($r, $state) = as('p1', "/api/events/$ev/stream");
is($state->{live}, JSON::PP::true, 'the page sees the stream live');

my $url = 'http://127.0.0.1:' . $t->port . "/live/$ev/index.m3u8";
my $probe = `ffprobe -v error -headers 'Cookie: platform_session=$cookie{p1}\r\n' -show_entries stream=codec_name -of csv=p=0 '$url' 2>&1`;
like($probe, qr/^h264$/m, 'ffprobe with the cookie decodes the video');
like($probe, qr/^aac$/m, '... and the audio');

$probe = `ffprobe -v error -show_entries stream=codec_name -of csv=p=0 '$url' 2>&1`;
unlike($probe, qr/h264/, 'without the cookie ffprobe gets nothing');
like($probe, qr/401/, '... 401');

$probe = `ffprobe -v error -headers 'Cookie: platform_session=$cookie{out}\r\n' -show_entries stream=codec_name -of csv=p=0 '$url' 2>&1`;
like($probe, qr/403/, 'someone without a ticket: 403');

waitpid($pid, 0);
is($?, 0, 'ffmpeg pushed for 8 seconds without an error')
    or diag(slurp($t->testdir . '/ffmpeg.log'));

$pl = slurp("$store/index.m3u8") // '';
like($pl, qr/#EXT-X-ENDLIST/, 'the final playlist has ENDLIST');
ok(!-e "$store/index0.ts", 'the first segment is gone from the disk');
my @segs = glob("$store/*.ts");
ok(@segs && @segs <= 6, 'only the window is kept (' . @segs . ' segments)');

($r, $state) = as('p1', "/api/events/$ev/stream");
is($state->{live}, JSON::PP::false, 'offline after the push');

# ------------------------------------------------------------------ rotation

$r = $t->req('POST', "/api/orgs/$s->{org}/events/$ev/stream/key",
             headers => { Cookie => "platform_session=$cookie{org}",
                          Origin => 'http://127.0.0.1:' . $t->port });
is($r->{status}, 200, 'the organiser rotates the key');
my $new = ($t->json($r) // {})->{ingest_key} // '';
isnt($new, $key, '... a new key');

ok(wait_until(sub { put('late.ts', 'x', %auth)->{status} == 403 }, 30),
   'the old key is refused after platform_hls_cache_ttl');
like(put('late.ts', 'x', Authorization => "Bearer $new")->{status}, qr/^20[14]$/,
   'the new key works');

done_testing;
