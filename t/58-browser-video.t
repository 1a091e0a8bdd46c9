#!/usr/bin/perl

# The live video on the event page (html/event.html, html/js/player.js,
# hls.js from npm in html/vendor/) in Debian's headless Chromium: ffmpeg
# pushes H.264 + AAC, a ticket holder opens event.html?id=N, the section
# says the stream is live and the video's currentTime advances.  Debian's
# Chromium plays H.264 through MediaSource (checked and reported).

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Test::Platform qw(browser_dir);
use Test::Platform::HLS qw(hls_setup ffmpeg_push wait_until slurp);

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = browser_dir();
plan skip_all => 'no html/vendor/hls.min.mjs (make copies it from npm)'
    unless -f "$root/html/vendor/hls.min.mjs";
plan skip_all => 'ffmpeg is needed'
    unless grep { -x "$_/ffmpeg" } split /:/, $ENV{PATH};

my $s = hls_setup($t, server => <<"CONF");
        location / {
            root $root/html;
        }
CONF
my ($ev, $key, %cookie) = ($s->{ev}, $s->{key}, %{$s->{cookie}});

my $pid = ffmpeg_push($t, $ev, $key, seconds => 60);
ok(wait_until(sub { (slurp("$s->{store}/$ev/index.m3u8") // '')
                    =~ /index2\.ts/ }, 60), 'ffmpeg is pushing');

my $url = 'http://127.0.0.1:' . $t->port . "/event.html?id=$ev";
my $out = `node '$dir/video.mjs' '$url' '$cookie{p1}' 2>&1`;
my $rc = $? >> 8;
my ($line) = grep { /^\{/ } split /\n/, $out;
my $res = eval { decode_json($line // '') } // {};

kill 'TERM', $pid;
waitpid($pid, 0);

is($rc, 0, 'video.mjs: the video played') or diag($out);
diag('Chromium MediaSource H.264: ' . ($res->{h264} // '?'));
is($res->{live}, 'true', 'the section shows the stream live');
like($res->{status} // '', qr/Live now/, '... and says so');
ok(($res->{later} // 0) > ($res->{start} // 0),
   'currentTime advanced (' . ($res->{start} // '?') . ' -> '
   . ($res->{later} // '?') . ')');
is_deeply($res->{errors}, [], 'no page errors');

done_testing;
