#!/usr/bin/perl

# The WebSocket frame parser under libFuzzer with ASan and UBSan, briefly:
# t/fuzz/ws_frame_fuzz.c parses each input at once, byte by byte and in
# random pieces and requires the same messages, control frames and error
# every way, valid UTF-8 in text, the size limit kept, close codes valid,
# and encoded messages to come back unchanged.  Seeds: t/fuzz/corpus/.
# `make fuzz FUZZ_TIME=3600` runs it for longer by hand.
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
     "$root/t/fuzz/ws_frame_fuzz.c",
     "$root/ngx_platform_module/ngx_platform_ws_frame.c",
     '-o', "$dir/ws_frame_fuzz"]);
is($rc, 0, 'the fuzzer builds without warnings') or diag("$out$err");

mkdir "$dir/corpus";
mkdir "$dir/artifacts";

{
    # the sanitizer settings of a SAN=1 run are for nginx, not for this
    local $ENV{ASAN_OPTIONS} = 'abort_on_error=0';
    local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

    ($rc, $out, $err) = $t->_capture(
        ["$dir/ws_frame_fuzz", "-runs=$RUNS", "-max_total_time=$SECONDS",
         '-seed=' . (time % 100000), "-artifact_prefix=$dir/artifacts/",
         '-print_final_stats=1', "$dir/corpus",
         "$root/t/fuzz/corpus/ws_frame"],
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
diag("ws_frame_fuzz: $runs runs, coverage $cov edges") if $runs && $cov;

done_testing;
