#!/usr/bin/perl

# Jobs runner configuration: what nginx -t refuses, platform_jobs off,
# SMTP AUTH with a password file (and a changed password after a reload),
# a relay that answers "try again later".

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $t = Test::Platform->new(workers => 1);

my $smtp = $t->smtp_sink(auth => 'mailer:s3cret pass');
my $SP = $smtp->port;
my $dir = $t->testdir;

$t->psql("UPDATE jobs.settings SET backoff_base_seconds = 0.1");

sub conf {
    my ($jobs) = @_;
    $t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 1; }
$jobs
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
    }
EOF
}

# ---------------------------------------------------------------- nginx -t

my @bad = (
    ['platform_jobs nope;', qr/no platform_pg "nope"/, 'unknown pg block'],
    ["platform_jobs main; platform_smtp_url smtp://mail.example.com:$SP;",
     qr/host is a name/, 'a relay named by a host name'],
    ['platform_jobs main; platform_smtp_url http://127.0.0.1:25;',
     qr/unsupported scheme/, 'not smtp'],
    ['platform_jobs main; platform_smtp_from "no address";',
     qr/invalid platform_smtp_from/, 'a bad sender'],
    ['platform_jobs main; platform_jobs_lease 30s; platform_jobs_timeout 30s;',
     qr/platform_jobs_lease must be longer/, 'a lease shorter than a transfer'],
    ['platform_jobs main; platform_jobs_batch 0;', qr/must be between/,
     'batch 0'],
    ['platform_jobs main; platform_smtp_starttls maybe;', qr/invalid value/,
     'starttls maybe'],
    ["platform_jobs main; platform_smtp_auth u $dir/missing;",
     qr/missing.*failed/, 'a missing password file'],
    ['platform_jobs main; platform_jobs main;', qr/is duplicate/,
     'platform_jobs twice'],
);

for my $b (@bad) {
    my ($c, $re, $name) = @$b;
    conf($c);
    my ($ok, $out) = $t->nginx_t;
    ok(!$ok, "nginx -t refuses: $name");
    like($out, $re, "... saying so") or diag($out);
}

conf("platform_jobs main; platform_smtp_url smtp://[::1]:$SP/mail.test;");
my ($ok, $out) = $t->nginx_t;
ok($ok, 'an IPv6 relay address is accepted') or diag($out);

# ---------------------------------------------------------------- off

conf("platform_jobs off; platform_smtp_url smtp://127.0.0.1:$SP;");
$t->run;

my $id = $t->psql(q{SELECT jobs.enqueue('mail', '{"to": "a@example.com",
                      "subject": "off", "text": "x"}')});
sleep 2.5;
is($t->psql("SELECT state FROM jobs.jobs WHERE id = $id"), 'pending',
   'platform_jobs off: nothing runs');
$t->psql("UPDATE jobs.jobs SET state = 'cancelled' WHERE id = $id");

# ---------------------------------------------------------------- auth

open(my $fh, '>', "$dir/smtp.pass") or die;
print $fh "wrong\n";
close $fh;

conf(<<"EOF");
    platform_jobs main;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_auth mailer smtp.pass;
EOF

# the password file is relative to the configuration's directory
$t->reload;

$id = $t->psql(q{SELECT jobs.enqueue('mail', '{"to": "a@example.com",
                   "subject": "denied", "text": "x"}', max_attempts => 1)});

my $deadline = time + 10;
my $state;
while (time < $deadline) {
    $state = $t->psql("SELECT state FROM jobs.jobs WHERE id = $id");
    last if $state eq 'dead';
    sleep 0.1;
}
is($state, 'dead', 'a wrong password: the attempt fails');
like($t->psql("SELECT last_error FROM jobs.jobs WHERE id = $id"),
     qr/login|auth|535/i, '... with the relay\'s reason');
is($smtp->count, 0, '... nothing delivered');
unlike($t->error_log, qr/wrong|s3cret/, 'passwords are not logged');

open($fh, '>', "$dir/smtp.pass") or die;
print $fh "s3cret pass\n";
close $fh;

$t->reload;

$id = $t->psql(q{SELECT jobs.enqueue('mail', '{"to": "a@example.com",
                   "subject": "allowed", "text": "x"}')});

is($smtp->wait_count(1, 10), 1, 'the right password: delivered');
ok(($smtp->envelopes)[0]{auth}, '... after AUTH');

# ---------------------------------------------------------------- 4xx reply

$smtp->reply('451 4.3.0 try again later');

$id = $t->psql(q{SELECT jobs.enqueue('mail', '{"to": "a@example.com",
                   "subject": "later", "text": "x"}')});

$deadline = time + 10;
my $err = '';
while (time < $deadline) {
    $err = $t->psql("SELECT coalesce(last_error, '') FROM jobs.jobs "
                    . "WHERE id = $id");
    last if $err ne '';
    sleep 0.1;
}
like($err, qr/451/, 'a 451 reply: the attempt failed, will retry');

$smtp->reply(undef);

$deadline = time + 10;
while (time < $deadline) {
    $state = $t->psql("SELECT state FROM jobs.jobs WHERE id = $id");
    last if $state eq 'done';
    sleep 0.1;
}
is($state, 'done', '... and is delivered later');
is($smtp->count, 2, 'two mails delivered in all');

$t->stop;

done_testing;
