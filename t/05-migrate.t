#!/usr/bin/perl

# tools/migrate: from an empty database, re-run on a migrated one (nothing
# applied, nothing lost), and a changed applied file is refused.

use strict;
use warnings;

use File::Copy qw(copy);
use File::Temp qw(tempdir);
use Test::More;
use Test::Platform;

my $t = Test::Platform->new;
my $root = $t->root;

# an empty database beside the test's own
my $db = $t->dbname . '_empty';
$t->psql(qq{CREATE DATABASE "$db"});

sub migrate {
    my (%opt) = @_;
    my $dir = $opt{dir} // "$root/sql";
    local $ENV{PGHOST} = $t->pghost;
    local $ENV{PGPORT} = $t->pgport;
    local $ENV{PGDATABASE} = $db;
    local $ENV{PGUSER} = 'postgres';
    my $out = `"$root/tools/migrate" '$dir' 2>&1`;
    return ($? >> 8, $out);
}

sub q_db {
    my ($sql) = @_;
    my $out = `psql -X -At -h '${\ $t->pghost}' -p ${\ $t->pgport} -U postgres -d '$db' -c "$sql" 2>&1`;
    chomp $out;
    return $out;
}

my @files = sort glob("$root/sql/[0-9][0-9][0-9]_*.sql");

my ($rc, $out) = migrate();
is($rc, 0, 'first run succeeds') or diag $out;
is(scalar(() = $out =~ /applied/g), scalar @files,
   'every migration applied once');
is(q_db('SELECT count(*) FROM public.platform_migrations'), scalar @files,
   'each recorded');

# data written between runs survives a re-run
q_db(q{INSERT INTO app.events (title, business_type, starts_at, ends_at,
       status) VALUES ('kept', 'meetup', now() + interval '1 day',
       now() + interval '2 days', 'published')});

($rc, $out) = migrate();
is($rc, 0, 're-run succeeds') or diag $out;
unlike($out, qr/applied/, 're-run applies nothing');
is(q_db(q{SELECT count(*) FROM app.events WHERE title = 'kept'}), 1,
   'data kept across a re-run');

# an applied migration that changed is refused, naming the file
my $dir = tempdir(CLEANUP => 1);
copy($_, $dir) for @files;
my ($first) = map { (split m{/})[-1] } @files;
open my $fh, '>>', "$dir/$first" or die $!;
print $fh "\n-- edited after it was applied\n";
close $fh;

($rc, $out) = migrate(dir => $dir);
isnt($rc, 0, 'changed applied migration refused');
like($out, qr/\Q$first\E/, 'error names the file');

$t->psql(qq{DROP DATABASE "$db"});

done_testing;
