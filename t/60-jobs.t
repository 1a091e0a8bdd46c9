#!/usr/bin/perl

# The jobs runner (ngx_platform_jobs.c, sql/004_jobs.sql) against real
# receivers: mail over SMTP to an aiosmtpd sink, webhooks over HTTP to a
# receiver that verifies the signature, SQL maintenance; schedules,
# cancel/reschedule by key, retries with backoff, dead letters, a relay
# that goes away and comes back, leases that run out, and the status page.

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use Encode qw(decode);
use MIME::Base64 qw(decode_base64);
use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $SECRET = 'whsec_test_0123456789abcdef';

my $t = Test::Platform->new(workers => 1);

my $smtp = $t->smtp_sink;
my $http = $t->http_sink(secret => $SECRET);

my ($SP, $HP) = ($smtp->port, $http->port);

$t->psql(<<"EOF");
INSERT INTO jobs.webhook_targets (name, url, secret, address) VALUES
    ('hook', 'http://127.0.0.1:$HP/in?x=1', '$SECRET', NULL),
    ('named', 'http://hooks.platform.test:$HP/named', '$SECRET', '127.0.0.1'),
    ('noaddr', 'http://hooks.platform.test:$HP/noaddr', '$SECRET', NULL);

-- retries come quickly in this test: 0.1 s * 2^attempt
UPDATE jobs.settings SET backoff_base_seconds = 0.1,
                         from_name = 'Platform Team';

CREATE TABLE public.t_maint (v text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION maintenance.t_touch(args jsonb) RETURNS void
LANGUAGE sql AS \$\$ INSERT INTO public.t_maint (v) VALUES (args ->> 'v') \$\$;
CREATE FUNCTION maintenance.t_fail() RETURNS void
LANGUAGE plpgsql AS \$\$ BEGIN RAISE EXCEPTION 'maintenance broke'; END \$\$;
EOF

$t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_jobs main;
    platform_jobs_timeout 3s;
    platform_jobs_lease 10s;
    platform_smtp_url smtp://127.0.0.1:$SP;
    platform_smtp_from noreply\@platform.test;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h      { platform_query GET api.health(); }
        location = /status { platform_status; }
    }
EOF

$t->run;

# ---------------------------------------------------------------- helpers

sub enqueue {
    my ($kind, $payload, %o) = @_;
    my $args = join '', map { ", $_ => $o{$_}" } sort keys %o;
    return $t->psql("SELECT jobs.enqueue('$kind', \$j\$$payload\$j\$$args)");
}

sub job {
    my ($id) = @_;
    my $row = $t->psql("SELECT state, attempts, coalesce(last_error, '') "
                       . "FROM jobs.jobs WHERE id = $id");
    my ($state, $attempts, $error) = split /\|/, $row, 3;
    return { state => $state, attempts => $attempts, error => $error };
}

sub wait_job {
    my ($id, $cond, $secs) = @_;
    my $deadline = time + ($secs // 10);
    my $j;
    while (1) {
        $j = job($id);
        return $j if $cond->($j) || time > $deadline;
        sleep 0.1;
    }
}

sub parse_mail {
    my ($raw) = @_;

    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head =~ s/\r\n[ \t]+/ /g;

    my %h;
    for (split /\r\n/, $head) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $h{lc $k} = $v;
    }

    my %parts;
    if (($h{'content-type'} // '') =~ /boundary="([^"]+)"/) {
        my $b = $1;
        for my $part (split /\r\n--\Q$b\E(?:--)?\r\n/, "\r\n$body") {
            my ($ph, $pb) = split /\r\n\r\n/, $part, 2;
            next unless defined $pb && $ph =~ m{Content-Type: (text/\w+)};
            $parts{$1} = decode('UTF-8', decode_base64($pb));
        }
    } else {
        ($parts{'text/plain'}) = decode('UTF-8', decode_base64($body));
    }

    return { header => \%h, parts => \%parts, head => $head };
}

sub db_epoch {
    my ($sql) = @_;
    return $t->psql("SELECT extract(epoch FROM ($sql))");
}

sub metric {
    my ($m, $name, %l) = @_;
    return $t->sample($m, $name, %l);
}

# ---------------------------------------------------------------- mail

{
    my $link = 'https://platform.test/confirm.html#token=T0k&x=<1>';

    # Scheduled 3 s ahead: not sent early, sent within 5 s of run_at.
    my $id = enqueue('mail', qq{{"to": "ann\@example.com",
                                 "template": "magic_link",
                                 "vars": {"link": "$link",
                                          "expires_minutes": 15}}},
                     run_at => "now() + interval '3 s'");
    my $run_at = db_epoch("SELECT run_at FROM jobs.jobs WHERE id = $id");

    while (time < $run_at - 0.3) {
        last if $smtp->count;
        sleep 0.1;
    }
    is($smtp->count, 0, 'scheduled mail: not sent before run_at');

    is($smtp->wait_count(1, $run_at + 6 - time), 1, 'scheduled mail: sent');

    my ($env) = $smtp->envelopes;
    my $late = $env->{received} - $run_at;
    cmp_ok($late, '>=', -0.05, 'sent at or after run_at');
    cmp_ok($late, '<=', 5, 'sent within 5 s of run_at')
        or diag("late by $late s");

    is($env->{mail_from}, 'noreply@platform.test', 'envelope sender');
    is_deeply($env->{rcpt_tos}, ['ann@example.com'], 'envelope recipient');

    my ($raw) = $smtp->messages;
    my $m = parse_mail($raw);
    my $h = $m->{header};

    is($h->{subject}, 'Your sign-in link', 'Subject from the template');
    is($h->{from}, '"Platform Team" <noreply@platform.test>',
       'From: display name and sender');
    is($h->{to}, 'ann@example.com', 'To');
    like($h->{'message-id'}, qr/^<job-$id\.\w+\@platform\.test>$/,
         'Message-ID names the job');
    like($h->{date}, qr/^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/,
         'Date');
    is($h->{'mime-version'}, '1.0', 'MIME-Version');
    like($h->{'content-type'}, qr{^multipart/alternative; boundary=},
         'multipart/alternative');
    like($m->{parts}{'text/plain'} // '', qr/\Q$link\E/,
         'text part: the link');
    like($m->{parts}{'text/plain'} // '', qr/expires in 15 minutes/,
         'text part: expiry');
    my $escaped = 'https://platform.test/confirm.html'
                  . '#token=T0k&amp;x=&lt;1&gt;';
    like($m->{parts}{'text/html'} // '', qr/href="\Q$escaped\E"/,
         'html part: the link, escaped');

    my $j = wait_job($id, sub { $_[0]{state} eq 'done' }, 5);
    is($j->{state}, 'done', 'mail job: done');
    is($j->{attempts}, 1, 'mail job: one attempt');
}

# Non-ASCII subject and name, several recipients, no template.
{
    my $n = $smtp->count;
    my $id = enqueue('mail', q{{"to": ["b@example.com", "c@example.org"],
                                "subject": "Grüße – Anmeldung bestätigt",
                                "text": "Hallo!\n.\n..zwei Punkte\nEnde",
                                "from_name": "Plätform"}});

    is($smtp->wait_count($n + 1, 10), $n + 1, 'second mail sent');

    my $env = ($smtp->envelopes)[-1];
    is_deeply([sort @{$env->{rcpt_tos}}], ['b@example.com', 'c@example.org'],
              'two recipients in the envelope');

    my $m = parse_mail(($smtp->messages)[-1]);
    like($m->{header}{subject}, qr/^=\?UTF-8\?B\?/, 'Subject is encoded');
    is(decode('MIME-Header', $m->{header}{subject}),
       "Gr\x{fc}\x{df}e \x{2013} Anmeldung best\x{e4}tigt",
       'Subject decodes to the original');
    is(decode('MIME-Header', $m->{header}{from}),
       "Pl\x{e4}tform <noreply\@platform.test>", 'From name decodes');
    is($m->{parts}{'text/plain'}, "Hallo!\r\n.\r\n..zwei Punkte\r\nEnde",
       'text only, CRLF, dots intact');
    ok(!exists $m->{parts}{'text/html'}, 'no html part');
    is(job($id)->{state}, 'done', 'done');
}

# ---------------------------------------------------------------- keys

{
    my $n = $smtp->count;

    enqueue('mail', q{{"to": "x@example.com", "subject": "cancelled",
                       "text": "never"}},
            run_at => "now() + interval '2 s'", key => q{'c:1'});
    my $r = enqueue('mail', q{{"to": "x@example.com", "subject": "moved",
                               "text": "now"}},
                    run_at => "now() + interval '1 hour'", key => q{'r:1'});

    is($t->psql(q{SELECT jobs.cancel('c:1')}), 't', 'cancel by key');
    is($t->psql(q{SELECT jobs.reschedule('r:1', now())}), 't',
       'reschedule by key');

    is($smtp->wait_count($n + 1, 6), $n + 1, 'the rescheduled job ran');
    sleep 3;
    is($smtp->count, $n + 1, 'the cancelled job did not');

    my $m = parse_mail(($smtp->messages)[-1]);
    is($m->{header}{subject}, 'moved', 'the one sent is the rescheduled one');
    is(job($r)->{state}, 'done', 'rescheduled: done');
}

# ---------------------------------------------------------------- webhooks

{
    my $id = enqueue('webhook', q{{"target": "hook",
                                   "body": {"event": "booking.created",
                                            "id": 42, "name": "Zoë"}}});

    is($http->wait_count(1, 10), 1, 'webhook delivered');

    my ($req) = $http->requests;
    my %h = map { lc $_->[0] => $_->[1] } @{$req->{headers}};

    is($req->{method}, 'POST', 'POST');
    is($req->{path}, '/in?x=1', 'to the target URL');
    is($h{'content-type'}, 'application/json', 'Content-Type');
    is($h{'x-platform-delivery'}, $id, 'X-Platform-Delivery: the job id');
    ok(!exists $h{expect}, 'no Expect header');
    ok($req->{verified}, 'the receiver verified the signature');

    my ($ts, $v1) = ($h{'x-platform-signature'} // '')
                    =~ /^t=(\d+),v1=([0-9a-f]{64})$/;
    ok($ts, 'signature header: t=<unix>,v1=<hex>');
    cmp_ok(abs(time - ($ts // 0)), '<', 30, 'signature time is now');

    my $body = Encode::encode('UTF-8', $req->{body});
    is($v1, hmac_sha256_hex("$ts.$body", $SECRET),
       'v1 = HMAC-SHA256("t.body", secret)');
    like($req->{body}, qr/"name": "Zo\x{eb}"/, 'body is the JSON');

    is(wait_job($id, sub { $_[0]{state} eq 'done' }, 5)->{state}, 'done',
       'webhook job: done');
}

# A failing receiver: retried with backoff, then delivered.
{
    my $n = $http->count;
    $http->status(503);

    my $id = enqueue('webhook', q{{"target": "hook", "body": {"n": 2}}});

    my $j = wait_job($id, sub { $_[0]{attempts} >= 2 }, 10);
    cmp_ok($j->{attempts}, '>=', 2, 'a 503 answer is retried');
    is($j->{error}, 'HTTP status 503', 'last_error: HTTP status 503');

    $http->status(undef);

    $j = wait_job($id, sub { $_[0]{state} eq 'done' }, 10);
    is($j->{state}, 'done', 'delivered once the receiver is back');
    my @reqs = grep { $_->{body} eq '{"n": 2}' } $http->requests;
    is($reqs[-1]{status}, 200, 'the last delivery got 200');
    is(scalar(@reqs), $j->{attempts}, 'one request per attempt');
}

# A host name: connected to the address from webhook_targets, never
# resolved; without an address the job fails with a reason.
{
    my $id = enqueue('webhook', q{{"target": "named", "body": {"n": 3}}});
    my $j = wait_job($id, sub { $_[0]{state} ne 'pending'
                                && $_[0]{state} ne 'running' }, 10);
    is($j->{state}, 'done', 'webhook to a named host with an address: done');

    my ($req) = grep { $_->{path} eq '/named' } $http->requests;
    my %h = map { lc $_->[0] => $_->[1] } @{$req->{headers} || []};
    is($h{host}, "hooks.platform.test:$HP", 'Host is the name');

    $id = enqueue('webhook', q{{"target": "noaddr", "body": {"n": 4}}},
                  max_attempts => 1);
    $j = wait_job($id, sub { $_[0]{state} eq 'dead' }, 10);
    is($j->{state}, 'dead', 'a named host without an address: dead');
    like($j->{error}, qr/names a host/, '... saying why');
}

# ---------------------------------------------------------------- sql jobs

{
    my $id = enqueue('sql', q{{"function": "t_touch", "args": {"v": "ran"}}});
    my $j = wait_job($id, sub { $_[0]{state} eq 'done' }, 10);
    is($j->{state}, 'done', 'sql job: done');
    is($t->psql('SELECT string_agg(v, \',\') FROM public.t_maint'), 'ran',
       'sql job: the maintenance function ran once');

    $id = enqueue('sql', q{{"function": "t_fail"}}, max_attempts => 2);
    $j = wait_job($id, sub { $_[0]{state} eq 'dead' }, 10);
    is($j->{state}, 'dead', 'failing sql job: dead after 2 attempts');
    is($j->{attempts}, 2, '... 2 attempts');
    is($j->{error}, 'maintenance broke', '... last_error');
}

# ---------------------------------------------------------------- leases

{
    my $n = $smtp->count;

    # A worker claimed it and died: running, lease over.
    my $id = enqueue('mail', q{{"to": "lease@example.com",
                                "subject": "lease", "text": "again"}},
                     run_at => "now() + interval '1 day'");
    $t->psql("UPDATE jobs.jobs SET state = 'running', attempts = 1, "
             . "run_at = now(), locked_by = 'gone/1', "
             . "locked_until = now() - interval '1 s' WHERE id = $id");

    my $j = wait_job($id, sub { $_[0]{state} eq 'done' }, 10);
    is($j->{state}, 'done', 'a job whose lease ran out is run again');
    is($j->{attempts}, 2, '... as attempt 2');
    is($smtp->wait_count($n + 1, 5), $n + 1, '... and delivered');

    # A lease still valid is left alone.
    $id = enqueue('mail', q{{"to": "lease@example.com", "subject": "held",
                             "text": "no"}},
                  run_at => "now() + interval '1 day'");
    $t->psql("UPDATE jobs.jobs SET state = 'running', attempts = 1, "
             . "run_at = now(), locked_until = now() + interval '1 hour' "
             . "WHERE id = $id");
    sleep 2.5;
    is(job($id)->{state}, 'running', 'a valid lease is not taken over');
    $t->psql("UPDATE jobs.jobs SET state = 'cancelled' WHERE id = $id");
}

# ---------------------------------------------------------------- relay down

{
    $smtp->stop;

    my $dead = enqueue('mail', q{{"to": "down@example.com",
                                  "subject": "dies", "text": "x"}},
                       max_attempts => 3);
    my $late = enqueue('mail', q{{"to": "down@example.com",
                                  "subject": "survives", "text": "y"}},
                       max_attempts => 30);

    # nginx keeps serving meanwhile
    # (how many requests fit in depends on the machine's load: every one
    # made must be answered, at least a few are made)
    my ($made, $ok, $slow) = (0, 0, 0);
    my $t0 = time;
    my $j;
    while (time - $t0 < 20) {
        my $r = $t->get('/h', timeout => 5);
        $made++;
        $ok++ if $r->{status} == 200;
        $slow++ if $r->{elapsed} > 1;
        $j = job($dead);
        last if $j->{state} eq 'dead' && job($late)->{attempts} >= 3;
        sleep 0.1;
    }

    is($j->{state}, 'dead', 'relay down: dead after max_attempts');
    is($j->{attempts}, 3, '... 3 attempts recorded');
    like($j->{error}, qr/connect|refused/i, '... last_error: cannot connect');
    cmp_ok($made, '>=', 2, 'requests made while the relay was down');
    is($ok, $made, 'nginx answered every one of them');
    is($slow, 0, '... none slower than 1 s');

    my $l = job($late);
    is($l->{state}, 'pending', 'the other job waits for a retry');
    cmp_ok($l->{attempts}, '>=', 3, '... with its attempts recorded');

    my $m = $t->metrics('/status');
    {
        # stats are polled each interval: allow for one more
        sleep 1.2;
        $m = $t->metrics('/status');
        cmp_ok(metric($m, 'platform_jobs_dead'), '>=', 1,
               'status: platform_jobs_dead');
        # the waiting job is retrying, or being tried again right now
        cmp_ok(metric($m, 'platform_jobs_retrying')
               + metric($m, 'platform_jobs_running'), '>=', 1,
               'status: platform_jobs_retrying (or running its retry)');
    }

    my $n = $smtp->count;
    $smtp->start;

    $l = wait_job($late, sub { $_[0]{state} eq 'done' }, 15);
    is($l->{state}, 'done', 'relay back: the pending job is delivered');
    is($smtp->wait_count($n + 1, 5), $n + 1, '... once');
    my $msg = parse_mail(($smtp->messages)[-1]);
    is($msg->{header}{subject}, 'survives', '... the right one');
}

# ---------------------------------------------------------------- status

{
    my $m = $t->metrics('/status');

    {

        for my $g (qw(due running retrying dead oldest_due_seconds)) {
            is($m->{_TYPE}{"platform_jobs_$g"}, 'gauge',
               "status: platform_jobs_$g is a gauge");
        }

        is($m->{_TYPE}{platform_jobs_completed_total}, 'counter',
           'status: completed_total is a counter');
        cmp_ok(metric($m, 'platform_jobs_completed_total', kind => 'mail'),
               '>=', 5, 'status: completed mail');
        cmp_ok(metric($m, 'platform_jobs_completed_total',
                      kind => 'webhook'), '>=', 3, 'status: completed hooks');
        cmp_ok(metric($m, 'platform_jobs_failed_total', kind => 'mail'),
               '>=', 3, 'status: failed mail attempts');
    }
}

# ---------------------------------------------------------------- not blocked

# A relay that takes 2 s to answer the end of the message: the worker (the
# only one) keeps serving meanwhile, and the mail is delivered once.
{
    my $slow = $t->smtp_sink(delay => 2);
    my $SSP = $slow->port;

    $t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_jobs main;
    platform_jobs_timeout 5s;
    platform_jobs_lease 10s;
    platform_smtp_url smtp://127.0.0.1:$SSP;
    platform_smtp_from noreply\@platform.test;

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h      { platform_query GET api.health(); }
        location = /status { platform_status; }
    }
EOF

    $t->reload;

    my $id = enqueue('mail', q{{"to": "slow@example.com",
                                "subject": "slow relay", "text": "z"}},
                     max_attempts => 1);

    wait_job($id, sub { $_[0]{state} ne 'pending' }, 5);

    my ($ok, $max, $during) = (0, 0, 0);
    my $t0 = time;
    while (time - $t0 < 8) {
        my $delivered = $slow->count;
        my $r = $t->get('/h', timeout => 5);
        $ok++ if $r->{status} == 200;
        $max = $r->{elapsed} if $r->{elapsed} > $max;
        $during++ unless $delivered;
        last if $delivered;
        sleep 0.05;
    }

    cmp_ok($during, '>=', 10, 'slow relay: requests served during delivery');
    is($ok, $during + 1, '... all answered');
    cmp_ok($max, '<', 0.5, '... none waited for the relay')
        or diag("slowest request: $max s");

    my $j = wait_job($id, sub { $_[0]{state} eq 'done' }, 5);
    is($j->{state}, 'done', 'slow relay: the mail job is done');
    is($j->{attempts}, 1, '... in one attempt');
    sleep 0.5;
    is($slow->count, 1, '... delivered once');
    is(parse_mail(($slow->messages)[0])->{header}{subject}, 'slow relay',
       '... the right one');
}

$t->stop;

unlike($t->error_log, qr/\[(alert|emerg|crit)\]/, 'no alerts in the log');

done_testing;
