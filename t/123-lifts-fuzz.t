#!/usr/bin/perl

# The lift reading decoder (ngx_platform_reading.c: MessagePack through
# msgpack-c after a walk over the headers, and the JSON parser) under
# libFuzzer with ASan and UBSan, briefly: t/fuzz/reading_fuzz.c decodes each
# input twice and requires the same outcome, counts that add up, errors that
# name invalid readings, valid readings within the documented ranges, and
# each valid reading to come back unchanged when written out as JSON and
# decoded again.  Seeds: t/fuzz/corpus/reading.  `make fuzz` runs it (and
# the WebSocket one) for longer by hand.
# Skipped, with the reason, when clang or libFuzzer is missing
# (t/lib/Test/Platform/Fuzz.pm).

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Test::Platform::Fuzz qw(fuzz);

my $t = Test::Platform->new;

fuzz($t, 'reading_fuzz',
     sources => ['ngx_platform_module/ngx_platform_reading.c'],
     libs => ['-lmsgpackc', '-lm'], corpus => 'reading');

done_testing;
