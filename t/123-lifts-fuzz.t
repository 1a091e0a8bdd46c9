#!/usr/bin/perl

# The lift reading decoder (ngx_platform_reading.c: MessagePack through
# msgpack-c after a walk over the headers, and the JSON parser) under
# libFuzzer with ASan and UBSan, briefly: t/fuzz/reading_fuzz.c decodes each
# input twice and requires the same outcome, counts that add up, errors that
# name invalid readings, valid readings within the documented ranges, and
# each valid reading to come back unchanged when written out as JSON and
# decoded again.  Seeds: t/fuzz/corpus/reading.  `make fuzz` runs it (and
# the WebSocket one) for longer by hand.
#
# Skipped, with the reason, when clang or libFuzzer (Debian
# libclang-rt-14-dev, installed by make deps) is missing.

use strict;
use warnings;

use Test::More;
use Test::Platform;

my $RUNS = $ENV{PLATFORM_FUZZ_RUNS} || 200000;
my $SECONDS = $ENV{PLATFORM_FUZZ_SECONDS} || 30;

my $t = Test::Platform->new;
my $root = $t->root;
my $dir = $t->testdir;

my ($clang) = grep { -x } map { "/usr/bin/$_" } qw(clang clang-14);
plan(skip_all => 'clang not installed (make deps installs it)')
    unless $clang;

# libFuzzer is a part of compiler-rt that may be missing
{
    open my $fh, '>', "$dir/probe.c" or die $!;
    print $fh "#include <stdint.h>\n#include <stddef.h>\n"
        . "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
        . " { (void) d; (void) n; return 0; }\n";
    close $fh;

    my ($rc, $out, $err) = $t->_capture(
        [$clang, '-fsanitize=fuzzer', "$dir/probe.c", '-o', "$dir/probe"]);

    plan(skip_all => 'libFuzzer not available to clang (Debian '
                     . 'libclang-rt-14-dev; make deps installs it): '
                     . (split /\n/, $err)[0])
        if $rc != 0;
}

my ($rc, $out, $err) = $t->_capture(
    [$clang, '-g', '-O1', '-fsanitize=fuzzer,address,undefined',
     '-fno-sanitize-recover=undefined', '-Wall', '-Wextra',
     '-Wno-unused-parameter', '-Werror',
     '-I', "$root/ngx_platform_module",
     "$root/t/fuzz/reading_fuzz.c",
     "$root/ngx_platform_module/ngx_platform_reading.c",
     '-lmsgpackc', '-lm', '-o', "$dir/reading_fuzz"]);
is($rc, 0, 'the fuzzer builds without warnings') or diag("$out$err");

mkdir "$dir/corpus";
mkdir "$dir/artifacts";

{
    # the sanitizer settings of a SAN=1 run are for nginx, not for this
    local $ENV{ASAN_OPTIONS} = 'abort_on_error=0';
    local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

    ($rc, $out, $err) = $t->_capture(
        ["$dir/reading_fuzz", "-runs=$RUNS", "-max_total_time=$SECONDS",
         '-seed=' . (time % 100000), "-artifact_prefix=$dir/artifacts/",
         '-print_final_stats=1', "$dir/corpus",
         "$root/t/fuzz/corpus/reading"],
        timeout => $SECONDS + 60);
}

my $log = "$out$err";
my ($runs) = $log =~ /^Done (\d+) runs/m;

is($rc, 0, 'the fuzzer found nothing') or diag(join "\n",
    grep { /ERROR|SUMMARY|check failed|==\d+==|artifact/ }
    split /\n/, $log);
ok($runs && $runs >= 1000, 'it ran (' . ($runs // 0) . ' inputs)')
    or diag(substr($log, -2000));

my ($cov) = ($log =~ /cov: (\d+)/g)[-1];
diag("reading_fuzz: $runs runs, coverage $cov edges") if $runs && $cov;

done_testing;
