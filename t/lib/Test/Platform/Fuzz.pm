package Test::Platform::Fuzz;

# A libFuzzer target built with ASan and UBSan and run briefly, as the
# fuzz tests do (t/82-ws-fuzz.t, t/123-lifts-fuzz.t):
#
#   fuzz($t, 'ws_frame_fuzz', sources => [...], libs => [...],
#        corpus => 'ws_frame');
#
# builds t/fuzz/<name>.c with the sources (paths under the root), runs it
# PLATFORM_FUZZ_RUNS times (200,000) or PLATFORM_FUZZ_SECONDS (30) over
# t/fuzz/corpus/<corpus>, and reports three tests: it builds without
# warnings, it found nothing, it ran.  The file is skipped, with the reason,
# when clang or libFuzzer (Debian libclang-rt-14-dev, installed by make
# deps) is missing.

use strict;
use warnings;

use Exporter 'import';
use Test::More ();

our @EXPORT_OK = qw(fuzz);

sub fuzz {
    my ($t, $name, %o) = @_;
    my $runs = $ENV{PLATFORM_FUZZ_RUNS} || 200000;
    my $seconds = $ENV{PLATFORM_FUZZ_SECONDS} || 30;
    my $root = $t->root;
    my $dir = $t->testdir;

    my ($clang) = grep { -x } map { "/usr/bin/$_" } qw(clang clang-14);
    Test::More::plan(skip_all => 'clang not installed (make deps installs it)')
        unless $clang;

    # libFuzzer is a part of compiler-rt that may be missing
    open my $fh, '>', "$dir/probe.c" or die "$dir/probe.c: $!\n";
    print $fh "#include <stdint.h>\n#include <stddef.h>\n"
        . "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
        . " { (void) d; (void) n; return 0; }\n";
    close $fh;

    my ($rc, $out, $err) = $t->_capture(
        [$clang, '-fsanitize=fuzzer', "$dir/probe.c", '-o', "$dir/probe"]);
    Test::More::plan(skip_all => 'libFuzzer not available to clang (Debian '
                                 . 'libclang-rt-14-dev; make deps installs '
                                 . 'it): ' . (split /\n/, $err)[0])
        if $rc != 0;

    ($rc, $out, $err) = $t->_capture(
        [$clang, '-g', '-O1', '-fsanitize=fuzzer,address,undefined',
         '-fno-sanitize-recover=undefined', '-Wall', '-Wextra',
         '-Wno-unused-parameter', '-Werror',
         '-I', "$root/ngx_platform_module",
         "$root/t/fuzz/$name.c",
         (map { "$root/$_" } @{$o{sources} || []}),
         @{$o{libs} || []}, '-o', "$dir/$name"]);
    Test::More::is($rc, 0, "$name builds without warnings")
        or Test::More::diag("$out$err");

    mkdir "$dir/corpus";
    mkdir "$dir/artifacts";

    {
        # the sanitizer settings of a SAN=1 run are for nginx, not for this
        local $ENV{ASAN_OPTIONS} = 'abort_on_error=0';
        local $ENV{UBSAN_OPTIONS} = 'print_stacktrace=1:halt_on_error=1';

        ($rc, $out, $err) = $t->_capture(
            ["$dir/$name", "-runs=$runs", "-max_total_time=$seconds",
             '-seed=' . (time % 100000), "-artifact_prefix=$dir/artifacts/",
             '-print_final_stats=1', "$dir/corpus",
             "$root/t/fuzz/corpus/$o{corpus}"],
            timeout => $seconds + 60);
    }

    my $log = "$out$err";
    my ($done) = $log =~ /^Done (\d+) runs/m;

    Test::More::is($rc, 0, "$name found nothing") or Test::More::diag(join "\n",
        grep { /ERROR|SUMMARY|check failed|==\d+==|artifact/ }
        split /\n/, $log);
    Test::More::ok($done && $done >= 1000,
                   "$name ran (" . ($done // 0) . ' inputs)')
        or Test::More::diag(substr($log, -2000));

    my ($cov) = ($log =~ /cov: (\d+)/g)[-1];
    Test::More::diag("$name: $done runs, coverage $cov edges")
        if $done && $cov;
}

1;
