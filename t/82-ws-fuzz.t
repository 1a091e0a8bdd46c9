#!/usr/bin/perl

# The WebSocket frame parser under libFuzzer with ASan and UBSan, briefly:
# t/fuzz/ws_frame_fuzz.c parses each input at once, byte by byte and in
# random pieces and requires the same messages, control frames and error
# every way, valid UTF-8 in text, the size limit kept, close codes valid,
# and encoded messages to come back unchanged.  Seeds: t/fuzz/corpus/.
# `make fuzz FUZZ_TIME=3600` runs it for longer by hand.
#
# Skipped, with the reason, when clang or libFuzzer is missing
# (t/lib/Test/Platform/Fuzz.pm).

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Test::Platform::Fuzz qw(fuzz);

my $t = Test::Platform->new;

fuzz($t, 'ws_frame_fuzz',
     sources => ['ngx_platform_module/ngx_platform_ws_frame.c'],
     corpus => 'ws_frame');

done_testing;
