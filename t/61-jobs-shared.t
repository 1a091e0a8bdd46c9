#!/usr/bin/perl

# Several runners on one database: two nginx instances (one with two
# workers running jobs, platform_jobs_workers 2) share the queue.  Every
# job is delivered exactly once; jobs in flight during a reload are given up
# and run again after their lease (at least once), with no alerts.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $SECRET = 'whsec_shared_0123456789abcdef';

my $t1 = Test::Platform->new(workers => 2);
my $t2 = Test::Platform->new(workers => 1);

my $smtp = $t1->smtp_sink;
my $http = $t1->http_sink(secret => $SECRET, delay => 0.1);

my ($SP, $HP) = ($smtp->port, $http->port);

# Only this test's jobs in the queue (not the migrations' repeating
# maintenance jobs, which wait for their hour).
$t1->psql(<<"EOF");
DELETE FROM jobs.jobs;
INSERT INTO jobs.webhook_targets (name, url, secret)
VALUES ('hook', 'http://127.0.0.1:$HP/in', '$SECRET');
UPDATE jobs.settings SET backoff_base_seconds = 0.1;
EOF

# Both instances use the first one's database.
my $conninfo = $t1->conninfo;

my $jobs = <<"EOF";
    platform_jobs main;
    platform_jobs_interval 200ms;
    platform_jobs_batch 2;
    platform_jobs_timeout 1s;
    platform_jobs_lease 3s;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@platform.test;
EOF

$t1->http_conf(<<"EOF");
    platform_pg main { server "$conninfo"; pool_size 2; }
$jobs
    platform_jobs_workers 2;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
    }
EOF

$t2->http_conf(<<"EOF");
    platform_pg main { server "$conninfo"; pool_size 2; }
$jobs
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
    }
EOF

$t1->run;
$t2->run;

my ($NMAIL, $NHOOK) = (50, 30);

my $first = $t1->psql(<<"EOF");
SELECT min(id) FROM (
    SELECT jobs.enqueue('mail', jsonb_build_object(
               'to', 'user' || i || '\@example.com',
               'subject', 'mail ' || i, 'text', 'body ' || i)) AS id
    FROM generate_series(1, $NMAIL) i
    UNION ALL
    SELECT jobs.enqueue('webhook', jsonb_build_object(
               'target', 'hook', 'body', jsonb_build_object('i', i)))
    FROM generate_series(1, $NHOOK) i) x;
EOF

is($smtp->wait_count($NMAIL, 30), $NMAIL, "$NMAIL mails delivered");
is($http->wait_count($NHOOK, 30), $NHOOK, "$NHOOK webhooks delivered");

# Anything run twice would show up now.
my $deadline = time + 15;
while (time < $deadline) {
    last if $t1->psql("SELECT count(*) FROM jobs.jobs "
                      . "WHERE state NOT IN ('done')") == 0;
    sleep 0.2;
}
sleep 1;

is($smtp->count, $NMAIL, 'no mail delivered twice');
is($http->count, $NHOOK, 'no webhook delivered twice');

my %mid;
for my $raw ($smtp->messages) {
    my ($id) = $raw =~ /\r\nMessage-ID: <job-(\d+)\./;
    $mid{$id // 'none'}++;
}
is(scalar(keys %mid), $NMAIL, 'one message per mail job');
ok(!(grep { $_ != 1 } values %mid), 'each Message-ID once');

my %del;
for my $r ($http->requests) {
    my %h = map { lc $_->[0] => $_->[1] } @{$r->{headers}};
    $del{$h{'x-platform-delivery'} // 'none'}++;
}
is(scalar(keys %del), $NHOOK, 'one request per webhook job');
ok(!(grep { !$_->{verified} } $http->requests), 'all signatures verified');

is($t1->psql("SELECT count(*) FROM jobs.jobs WHERE state = 'done' "
             . "AND attempts = 1"),
   $NMAIL + $NHOOK, 'every job done in one attempt');

my @runners = split /\n/, $t1->psql(
    "SELECT locked_by || ' ' || count(*) FROM jobs.jobs "
    . "GROUP BY locked_by ORDER BY 1");
diag("runners: @runners");
cmp_ok(scalar(@runners), '>=', 2, 'the work was shared');

# ---------------------------------------------------------------- reload

# Webhooks take 0.3 s at the receiver: some are in flight when the old
# workers go.  They are given up and run again after the 3 s lease.

$http->stop;
my $http2 = $t1->http_sink(secret => $SECRET, delay => 0.3, port => $HP);

my $NR = 20;
$t1->psql("SELECT jobs.enqueue('webhook', jsonb_build_object('target', "
          . "'hook', 'body', jsonb_build_object('r', i))) "
          . "FROM generate_series(1, $NR) i");

sleep 0.5;
$t1->reload;
$t2->reload;

$deadline = time + 30;
while (time < $deadline) {
    last if $t1->psql("SELECT count(*) FROM jobs.jobs "
                      . "WHERE state <> 'done'") == 0;
    sleep 0.2;
}

is($t1->psql("SELECT count(*) FROM jobs.jobs WHERE state <> 'done'"), 0,
   'after reloads: every job done');

my %got;
for my $r ($http2->requests) {
    $got{$1}++ if $r->{body} =~ /"r": (\d+)/;
}
is(scalar(keys %got), $NR, 'after reloads: every webhook delivered');
diag('delivered more than once (at least once): '
     . scalar(grep { $_ > 1 } values %got));

is($t1->get('/h')->{status}, 200, 'instance 1 serves');
is($t2->get('/h')->{status}, 200, 'instance 2 serves');

$t2->stop;
$t1->stop;

done_testing;
