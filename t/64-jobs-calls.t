#!/usr/bin/perl

# Call jobs (sql/007_jobs_calls.sql, ngx_platform_jobs.c): authenticated
# HTTP API calls to a service of nginx.conf, against a real receiver
# (t/lib/http_sink.py) standing in for the API; the answer reaches a
# callback in the database.  Methods, path, bearer key, form body,
# Idempotency-Key; 4xx final, 5xx retried; a response over
# platform_jobs_response_max_size; an unknown service; a host name
# resolved at configuration time, over HTTPS; what nginx -t refuses.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time sleep);

my $KEY = 'sk_test_51Hx0123456789abcdefSECRET';

my $t = Test::Platform->new(workers => 1);
my $dir = $t->testdir;

my $api = $t->http_sink;
my $tls = $t->http_sink(tls => 1);
my ($AP, $TP) = ($api->port, $tls->port);
my ($crt) = $t->test_certificate;

open(my $fh, '>', "$dir/api.key") or die "$dir/api.key: $!\n";
print $fh "$KEY\n";
close $fh;

$t->psql(<<'EOF');
UPDATE jobs.settings SET backoff_base_seconds = 0.1;

CREATE TABLE public.t_answers (
    context   jsonb,
    status    int,
    response  text,
    at        timestamptz DEFAULT clock_timestamp()
);

CREATE FUNCTION callbacks.t_store(context jsonb, status int, response text)
RETURNS void LANGUAGE sql
AS $$ INSERT INTO public.t_answers VALUES (context, status, response) $$;
EOF

sub conf {
    my ($extra) = @_;
    $t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_jobs main;
    platform_jobs_timeout 3s;
    platform_jobs_lease 10s;
    platform_jobs_response_max_size 64k;
    platform_jobs_trusted_certificate $crt;

$extra
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /status { platform_status; }
    }
EOF
}

my $SERVICES = <<"EOF";
    platform_jobs_service api http://127.0.0.1:$AP/base/ bearer=api.key
                          "header=Stripe-Version: 2024-06-20";
    platform_jobs_service named https://localhost:$TP bearer=$dir/api.key;
EOF

# ---------------------------------------------------------------- helpers

sub enqueue {
    my ($payload, %o) = @_;
    my $args = join '', map { ", $_ => $o{$_}" } sort keys %o;
    return $t->psql("SELECT jobs.enqueue('call', \$j\$$payload\$j\$$args)");
}

sub job {
    my ($id) = @_;
    my ($state, $attempts, $error) = split /\|/,
        $t->psql("SELECT state, attempts, coalesce(last_error, '') "
                 . "FROM jobs.jobs WHERE id = $id"), 3;
    return { state => $state, attempts => $attempts, error => $error };
}

sub wait_job {
    my ($id, $cond, $secs) = @_;
    my $deadline = time + ($secs // 10);
    while (1) {
        my $j = job($id);
        return $j if $cond->($j) || time > $deadline;
        sleep 0.1;
    }
}

sub finished { wait_job($_[0], sub { $_[0]{state} =~ /^(done|dead)$/ }) }

# the callback's calls for a context {"n": N}: [status, response]...
sub answers {
    my ($n) = @_;
    my $rows = $t->psql("SELECT status || ' ' || replace(response, E'\\n', "
                        . "'\\n') FROM t_answers "
                        . "WHERE context = '{\"n\": $n}' ORDER BY at");
    return [map { [split / /, $_, 2] } grep { length } split /\n/, $rows];
}

sub headers_of {
    my ($req) = @_;
    return { map { lc $_->[0] => $_->[1] } @{$req->{headers} || []} };
}

sub last_request {
    my ($sink, $path) = @_;
    my @r = grep { $_->{path} =~ /^\Q$path\E/ } $sink->requests;
    return $r[-1];
}

# ---------------------------------------------------------------- nginx -t

my @bad = (
    ["platform_jobs_service api ftp://127.0.0.1:$AP;", qr/unsupported scheme/,
     'not http or https'],
    ["platform_jobs_service api http://127.0.0.1:$AP/x?y=1;",
     qr/query or fragment is not allowed/, 'a query'],
    ['platform_jobs_service api 127.0.0.1;', qr/invalid URL/, 'no scheme'],
    ["platform_jobs_service api http://u:p\@127.0.0.1:$AP;",
     qr/user name is not allowed/, 'a user in the URL'],
    ['platform_jobs_service api http://nowhere.invalid;',
     qr/invalid URL.*host not found/, 'a host that does not resolve'],
    ["platform_jobs_service api http://127.0.0.1:$AP bearer=$dir/nokey;",
     qr/nokey.*failed/, 'an unreadable key file'],
    ["platform_jobs_service api http://127.0.0.1:$AP;\n"
     . "    platform_jobs_service api http://127.0.0.1:$AP;",
     qr/duplicate platform_jobs_service "api"/, 'a service named twice'],
    ["platform_jobs_service Stripe http://127.0.0.1:$AP;",
     qr/invalid service name "Stripe"/, 'a bad name'],
    ["platform_jobs_service api http://127.0.0.1:$AP header=nocolon;",
     qr/invalid header "nocolon"/, 'a bad header'],
    ["platform_jobs_service api http://127.0.0.1:$AP size=1;",
     qr/invalid parameter "size=1"/, 'an unknown parameter'],
);

for my $b (@bad) {
    my ($c, $re, $name) = @$b;
    conf($c);
    my ($ok, $out) = $t->nginx_t;
    ok(!$ok, "nginx -t refuses: $name");
    like($out, $re, '... saying so') or diag($out);
    unlike($out, qr/\Q$KEY\E/, '... without the key');
}

conf($SERVICES);
my ($ok, $out) = $t->nginx_t;
ok($ok, 'nginx -t accepts the services') or diag($out);

$t->run;

# ---------------------------------------------------------------- a call

{
    $api->reply('{"id": "cs_test_1", "url": "https://checkout.test/p"}');

    my $id = enqueue(q{{"service": "api", "method": "POST",
                        "path": "/v1/checkout/sessions",
                        "form": {"mode": "payment",
                                 "line_items[0][price_data][currency]": "eur",
                                 "line_items[0][quantity]": 1,
                                 "metadata[name]": "Zoë & co",
                                 "automatic_tax[enabled]": false},
                        "headers": {"Idempotency-Key": "reg-1-checkout"},
                        "callback": "t_store",
                        "context": {"n": 1}}});

    my $j = finished($id);
    is($j->{state}, 'done', 'a call: done');
    is($j->{attempts}, 1, '... in one attempt');

    my $req = last_request($api, '/base/v1/checkout/sessions');
    ok($req, 'the service received it, at its base URL + path');
    my $h = headers_of($req);

    is($req->{method}, 'POST', 'POST');
    is($h->{authorization}, "Bearer $KEY", 'Authorization: Bearer <key file>');
    is($h->{'content-type'}, 'application/x-www-form-urlencoded',
       'Content-Type: form');
    is($h->{'idempotency-key'}, 'reg-1-checkout', 'Idempotency-Key');
    is($h->{'stripe-version'}, '2024-06-20', 'a header of the service');
    ok(!exists $h->{expect}, 'no Expect');
    is($req->{body},
       'automatic_tax%5Benabled%5D=false'
       . '&line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=eur'
       . '&line_items%5B0%5D%5Bquantity%5D=1'
       . '&metadata%5Bname%5D=Zo%C3%AB%20%26%20co&mode=payment',
       'the form, percent-encoded');

    is_deeply(answers(1),
              [['200', '{"id": "cs_test_1", "url": "https://checkout.test/p"}'
                       . '\n']],
              'the callback got the status and the response body');

    $api->reply(undef);
}

# GET with a query, DELETE, JSON with PATCH; no callback.
{
    my $g = enqueue(q{{"service": "api", "method": "GET",
                       "path": "/v1/checkout/sessions/cs_1",
                       "form": {"expand[]": "payment_intent"}}});
    my $d = enqueue(q{{"service": "api", "method": "DELETE",
                       "path": "/v1/things/t_1"}});
    my $p = enqueue(q{{"service": "api", "method": "PATCH",
                       "path": "/v1/things/t_2", "json": {"a": [1, "b"]}}});

    is(finished($_)->{state}, 'done', "call $_ without a callback: done")
        for $g, $d, $p;

    my $r = last_request($api, '/base/v1/checkout/sessions/cs_1');
    is($r->{method}, 'GET', 'GET');
    is($r->{path}, '/base/v1/checkout/sessions/cs_1?expand%5B%5D='
                   . 'payment_intent', '... the form is the query string');
    is($r->{body}, '', '... no body');

    $r = last_request($api, '/base/v1/things/t_1');
    is($r->{method}, 'DELETE', 'DELETE');
    is($r->{body}, '', '... no body');

    $r = last_request($api, '/base/v1/things/t_2');
    is($r->{method}, 'PATCH', 'PATCH');
    is(headers_of($r)->{'content-type'}, 'application/json', '... JSON');
    is($r->{body}, '{"a": [1, "b"]}', '... the JSON body');
}

# A 4xx answer is final: the callback runs, the job is done.
{
    $api->status(402);
    $api->reply('{"error": {"code": "card_declined"}}');

    my $id = enqueue(q{{"service": "api", "method": "POST", "path": "/v1/r",
                        "form": {}, "callback": "t_store",
                        "context": {"n": 2}}});
    my $j = finished($id);
    is($j->{state}, 'done', '402: done');
    is($j->{attempts}, 1, '... not retried');
    is($j->{error}, 'HTTP status 402', '... last_error names the status');
    is_deeply(answers(2),
              [['402', q{{"error": {"code": "card_declined"}}\n}]],
              '... the callback got 402 and the body');

    $api->status(undef);
    $api->reply(undef);
}

# A 5xx answer is retried: the callback runs only for the final answer.
{
    $api->status(500);
    my $n = $api->count;

    my $id = enqueue(q{{"service": "api", "method": "POST", "path": "/v1/s",
                        "callback": "t_store", "context": {"n": 3}}});

    my $j = wait_job($id, sub { $_[0]{attempts} >= 2 });
    cmp_ok($j->{attempts}, '>=', 2, '500: retried');
    is($j->{error}, 'HTTP status 500', '... last_error');
    is_deeply(answers(3), [], '... the callback did not run');

    $api->status(undef);

    $j = finished($id);
    is($j->{state}, 'done', '... done once the service answers 200');
    is_deeply(answers(3), [['200', qq{{"received":true}}]],
              '... the callback ran once, with 200');
    is(scalar(grep { $_->{path} eq '/base/v1/s' } $api->requests),
       $j->{attempts}, '... one request per attempt');
}

# ---------------------------------------------------------------- failures

# An answer larger than platform_jobs_response_max_size fails the attempt.
{
    $api->reply('x' x (100 * 1024));

    my $id = enqueue(q{{"service": "api", "method": "GET", "path": "/big",
                        "callback": "t_store", "context": {"n": 4}}},
                     max_attempts => 1);
    my $j = finished($id);
    is($j->{state}, 'dead', 'a response over the limit: dead (1 attempt)');
    like($j->{error}, qr/larger than platform_jobs_response_max_size \(65536/,
         '... saying why');
    my $a = answers(4);
    is($a->[0][0], '0', '... the last attempt\'s callback got status 0');
    like($a->[0][1] // '', qr/larger than/, '... and the error');

    $api->reply(undef);
}

# A service nginx.conf does not name.
{
    my $id = enqueue(q{{"service": "nope", "method": "POST", "path": "/x"}},
                     max_attempts => 2);
    my $j = finished($id);
    is($j->{state}, 'dead', 'an unknown service: dead');
    is($j->{attempts}, 2, '... after its attempts');
    like($j->{error}, qr/^unknown service "nope"/, '... saying why');
}

# ---------------------------------------------------------------- names, TLS

# localhost was resolved when the configuration was read; the certificate
# is verified against platform_jobs_trusted_certificate for that name.
{
    my $id = enqueue(q{{"service": "named", "method": "POST", "path": "/in",
                        "json": "hello", "callback": "t_store",
                        "context": {"n": 5}}});
    my $j = finished($id);
    is($j->{state}, 'done', 'https://localhost: done') or diag($j->{error});

    my $r = last_request($tls, '/in');
    my $h = headers_of($r);
    is($h->{host}, "localhost:$TP", '... Host is the name');
    is($h->{authorization}, "Bearer $KEY", '... with the bearer key');
    is($r->{body}, '"hello"', '... a JSON string body');
    is_deeply(answers(5), [['200', '{"received":true}']], '... callback');
}

# ---------------------------------------------------------------- status

{
    my $m = $t->metrics('/status');
    cmp_ok($t->sample($m, 'platform_jobs_completed_total', kind => 'call'),
           '>=', 7, 'status: completed calls');
    cmp_ok($t->sample($m, 'platform_jobs_failed_total', kind => 'call'),
           '>=', 4, 'status: failed call attempts');
}

$t->stop;

unlike($t->error_log, qr/\Q$KEY\E/, 'the key is not in the error log');
like($t->error_log, qr/call job \d+ attempt 1 failed: unknown service/,
     'failed attempts are logged');

done_testing;
