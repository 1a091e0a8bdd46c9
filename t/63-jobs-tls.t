#!/usr/bin/perl

# The jobs runner over TLS: SMTP with STARTTLS and SMTPS, HTTPS webhooks,
# certificates verified against platform_jobs_trusted_certificate (and
# refused without it), STARTTLS required from a relay that has none.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $SECRET = 'whsec_tls_0123456789abcdef';

my $t = Test::Platform->new(workers => 1);

my ($crt) = $t->test_certificate;

my $starttls = $t->smtp_sink(tls => 'starttls');
my $smtps = $t->smtp_sink(tls => 'implicit');
my $plain = $t->smtp_sink;
my $https = $t->http_sink(tls => 1, secret => $SECRET);

my $HP = $https->port;

$t->psql(<<"EOF");
INSERT INTO jobs.webhook_targets (name, url, secret)
VALUES ('tls', 'https://127.0.0.1:$HP/in', '$SECRET');
UPDATE jobs.settings SET backoff_base_seconds = 0.1;
EOF

sub conf {
    my ($jobs) = @_;
    $t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 1; }

    platform_jobs main;
    platform_jobs_timeout 3s;
    platform_jobs_lease 10s;
$jobs
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
    }
EOF
}

sub enqueue {
    my ($kind, $payload, %o) = @_;
    my $args = join '', map { ", $_ => $o{$_}" } sort keys %o;
    return $t->psql("SELECT jobs.enqueue('$kind', \$j\$$payload\$j\$$args)");
}

sub finished {
    my ($id, $secs) = @_;
    my $deadline = time + ($secs // 10);
    my $row;
    while (time < $deadline) {
        $row = $t->psql("SELECT state || '|' || coalesce(last_error, '') "
                        . "FROM jobs.jobs WHERE id = $id");
        last if $row =~ /^(done|dead)\|/;
        sleep 0.1;
    }
    return split /\|/, $row, 2;
}

my $MAIL = q{{"to": "tls@example.com", "subject": "tls", "text": "x"}};

# ---------------------------------------------------------------- STARTTLS

conf(<<"EOF");
    platform_jobs_trusted_certificate $crt;
    platform_smtp_url smtp://127.0.0.1:${\ $starttls->port};
    platform_smtp_starttls required;
EOF

$t->run;

my ($state, $err) = finished(enqueue('mail', $MAIL));
is($state, 'done', 'STARTTLS: delivered') or diag($err);
is($starttls->count, 1, '... one message');
ok(($starttls->envelopes)[0]{tls}, '... over TLS');

my $id = enqueue('webhook', q{{"target": "tls", "body": {"secure": true}}});
($state, $err) = finished($id);
is($state, 'done', 'HTTPS webhook: delivered') or diag($err);
ok(($https->requests)[0]{verified}, '... signature verified');

# ---------------------------------------------------------------- SMTPS

conf(<<"EOF");
    platform_jobs_trusted_certificate $crt;
    platform_smtp_url smtps://127.0.0.1:${\ $smtps->port};
EOF

$t->reload;

($state, $err) = finished(enqueue('mail', $MAIL));
is($state, 'done', 'SMTPS: delivered') or diag($err);
ok(($smtps->envelopes)[0]{tls}, '... over TLS');

# ---------------------------------------------------------------- refused

conf(<<"EOF");
    platform_smtp_url smtps://127.0.0.1:${\ $smtps->port};
EOF

$t->reload;

($state, $err) = finished(enqueue('mail', $MAIL, max_attempts => 1));
is($state, 'dead', 'SMTPS, certificate not trusted: refused');
like($err, qr/certificate/i, '... saying why');

($state, $err) = finished(enqueue('webhook', q{{"target": "tls",
                                                "body": {"n": 2}}},
                                  max_attempts => 1));
is($state, 'dead', 'HTTPS, certificate not trusted: refused');
like($err, qr/certificate/i, '... saying why');
is($https->count, 1, '... nothing sent');

conf(<<"EOF");
    platform_jobs_trusted_certificate $crt;
    platform_smtp_url smtp://127.0.0.1:${\ $plain->port};
    platform_smtp_starttls required;
EOF

$t->reload;

($state, $err) = finished(enqueue('mail', $MAIL, max_attempts => 1));
is($state, 'dead', 'STARTTLS required, relay without it: refused');
like($err, qr/STARTTLS|TLS|SSL/i, '... saying why') or diag($err);
is($plain->count, 0, '... nothing sent in clear');

conf(<<"EOF");
    platform_smtp_url smtp://127.0.0.1:${\ $plain->port};
    platform_smtp_starttls on;
EOF

$t->reload;

($state, $err) = finished(enqueue('mail', $MAIL));
is($state, 'done', 'STARTTLS on, relay without it: sent in clear')
    or diag($err);

$t->stop;

done_testing;
