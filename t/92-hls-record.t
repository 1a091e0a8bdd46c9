#!/usr/bin/perl

# HLS recording (issue 6, ngx_platform_hls.c, docs/hls.md): with recording
# on, ffmpeg pushes with delete_segments (its DELETEs are answered 204 and
# the segments stay); after the push a VOD playlist (PLAYLIST-TYPE:VOD,
# ENDLIST) names every segment, the page offers it, and ffmpeg with a
# ticket holder's cookie decodes it from the first frame to the last.
# Then an encoder killed mid-stream: ENDLIST after platform_hls_idle, and
# its recording too.

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
my $s = hls_setup($t, extra => "    platform_hls_idle 3s;\n");
my ($ev, $key, %cookie) = ($s->{ev}, $s->{key}, %{$s->{cookie}});
my $store = "$s->{store}/$ev";
my $origin = 'http://127.0.0.1:' . $t->port;

my $r = $t->req('PATCH', "/api/orgs/$s->{org}/events/$ev/stream",
                body => '{"record": true}',
                headers => { Cookie => "platform_session=$cookie{org}",
                             Origin => $origin });
is($r->{status}, 200, 'the organiser turns recording on');
is(($t->json($r) // {})->{record}, JSON::PP::true, '... record: true');

# 6 seconds at 25 frames/s: 150 frames, in 1-second segments.
my $pid = ffmpeg_push($t, $ev, $key, seconds => 6);
waitpid($pid, 0);
is($?, 0, 'ffmpeg pushed for 6 seconds')
    or diag(slurp($t->testdir . '/ffmpeg.log'));

ok(-e "$store/index0.ts", 'the first segment is kept despite its DELETE');

my $vod = wait_until(sub { slurp("$store/vod.m3u8") }, 30) // '';
like($vod, qr/#EXT-X-PLAYLIST-TYPE:VOD/, 'a VOD playlist is written');
like($vod, qr/#EXT-X-ENDLIST\n\z/, '... ending with ENDLIST');
my @names = $vod =~ /^(index\d+\.ts)$/mg;
is_deeply(\@names, [map { "index$_.ts" } 0 .. $#names],
          '... naming every segment in order (' . @names . ')');
ok(@names >= 5, '... all of them');

my $st = $t->json($t->get("/api/events/$ev/stream",
                          headers => { Cookie =>
                                       "platform_session=$cookie{p1}" }))
         // {};
is($st->{recording}, "/live/$ev/vod.m3u8", 'the page offers the recording');

my $url = "http://127.0.0.1:" . $t->port . "/live/$ev/vod.m3u8";
my $out = `ffprobe -v error -headers 'Cookie: platform_session=$cookie{p1}\r\n' -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 '$url' 2>&1`;
like($out, qr/^150$/m, 'ffprobe decodes the recording: all 150 frames')
    or diag($out);

$out = `ffprobe -v error -select_streams v:0 -show_entries stream=codec_name -of csv=p=0 '$url' 2>&1`;
like($out, qr/401/, 'the recording is for ticket holders too');

# ------------------------------------------------------------------ killed

# The same event pushed again: the recording starts over.
$pid = ffmpeg_push($t, $ev, $key, seconds => 60);
ok(wait_until(sub { (slurp("$store/index.m3u8") // '') =~ /index3\.ts/
                    && !-e "$store/vod.m3u8" }, 60),
   'a second push is under way, the old recording gone');
kill 'KILL', $pid;
waitpid($pid, 0);

unlike(slurp("$store/index.m3u8"), qr/ENDLIST/, 'killed: no ENDLIST yet');
ok(wait_until(sub { (slurp("$store/index.m3u8") // '') =~ /ENDLIST/ }, 30),
   'ENDLIST after platform_hls_idle');
ok(wait_until(sub { (slurp("$store/vod.m3u8") // '') =~ /ENDLIST/ }, 30),
   '... and the recording is written');
@names = (slurp("$store/vod.m3u8") // '') =~ /^(index\d+\.ts)$/mg;
ok(@names >= 4 && $names[0] eq 'index0.ts', '... from the first segment');

done_testing;
