#!/usr/bin/perl

# platform_webhook_signature (ngx_platform_signature.c): Stripe-style
# signatures checked over the raw body before platform_query runs.  Bodies
# signed here with Digest::SHA as Stripe signs them; several v1, a second
# secret during a roll, tampering, a wrong secret, the timestamp window,
# missing and garbled headers, a body nginx spooled to a temporary file,
# GET not checked, a custom header, configuration errors.

use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use Digest::SHA qw(hmac_sha256_hex);
use Test::More;
use Test::Platform;

my $SECRET = 'whsec_NEW0123456789abcdefghijklmnopqrstu';
my $OLD = 'whsec_OLD9876543210zyxwvutsrqponmlkjihg';

my $t = Test::Platform->new(workers => 1);
my $dir = $t->testdir;

for (['new.secret', "$SECRET\n"], ['old.secret', $OLD]) {
    open(my $fh, '>', "$dir/$_->[0]") or die "$dir/$_->[0]: $!\n";
    print $fh $_->[1];
    close $fh;
}

$t->psql(<<'EOF');
CREATE TABLE public.t_hooks (id serial PRIMARY KEY, body text, t bigint,
                             event jsonb);
GRANT SELECT, INSERT ON public.t_hooks TO platform_app;
GRANT USAGE ON SEQUENCE public.t_hooks_id_seq TO platform_app;

CREATE FUNCTION api.t_hook(body text, signature_time bigint) RETURNS json
LANGUAGE sql AS $$
    INSERT INTO public.t_hooks (body, t) VALUES (body, signature_time)
    RETURNING json_build_object('id', id, 't', t)
$$;

CREATE FUNCTION api.t_hook_json(body jsonb, signature_time bigint)
RETURNS json LANGUAGE sql AS $$
    INSERT INTO public.t_hooks (event, t) VALUES (body, signature_time)
    RETURNING json_build_object('id', id, 'type', event ->> 'type')
$$;

CREATE FUNCTION api.t_ping() RETURNS json LANGUAGE sql AS $$
    SELECT '{"pong": true}'::json
$$;
EOF

sub conf {
    my ($loc) = @_;
    $t->http_conf(<<"EOF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    server {
        listen 127.0.0.1:%%PORT%%;
        client_body_buffer_size 8k;

        location = /hook {
            platform_webhook_signature stripe new.secret $dir/old.secret
                                       tolerance=300s;
            platform_query POST api.t_hook(\$platform_body,
                                           \$platform_signature_time::bigint);
            platform_query GET api.t_ping();
        }

        location = /hook/json {
            platform_webhook_signature stripe new.secret;
            platform_query POST api.t_hook_json(\$platform_body::jsonb,
                \$platform_signature_time::bigint);
        }

        location = /hook/custom {
            platform_webhook_signature stripe new.secret tolerance=0
                                       header=X-Signature;
            platform_query POST api.t_hook(\$platform_body,
                                           \$platform_signature_time::bigint);
        }
$loc
    }
EOF
}

# ---------------------------------------------------------------- helpers

sub sign {
    my ($body, %o) = @_;
    my $ts = $o{t} // time;
    my $mac = hmac_sha256_hex("$ts.$body", $o{secret} // $SECRET);
    return "t=$ts,v1=$mac";
}

sub hooks { $t->psql('SELECT count(*) FROM public.t_hooks') }

sub post {
    my ($path, $body, $sig, %o) = @_;
    my $name = $o{header} // 'Stripe-Signature';
    return $t->req('POST', $path, body => $body,
                   headers => defined $sig ? { $name => $sig } : {});
}

sub refused {
    my ($r, $re, $name) = @_;
    is($r->{status}, 400, "$name: 400");
    my $e = ($t->json($r) || {})->{error} || {};
    is($e->{code}, 'signature', '... code "signature"');
    like($e->{message} // '', $re, '... the message says why');
}

# ---------------------------------------------------------------- nginx -t

my @bad = (
    ["location = /x { platform_webhook_signature stripe $dir/none;\n"
     . "    platform_query POST api.t_ping(); }",
     qr/none.*failed/, 'a missing secret file'],
    ['location = /x { platform_webhook_signature stripe new.secret; }',
     qr/needs platform_query/, 'a location without platform_query'],
    ['location = /x { platform_webhook_signature github new.secret;'
     . ' platform_query POST api.t_ping(); }',
     qr/unsupported scheme "github"/, 'another scheme'],
    ['location = /x { platform_webhook_signature stripe new.secret'
     . ' tolerance=soon; platform_query POST api.t_ping(); }',
     qr/invalid parameter "tolerance=soon"/, 'a bad tolerance'],
    ['location = /x { platform_webhook_signature stripe;'
     . ' platform_query POST api.t_ping(); }',
     qr/needs the file/, 'no file'],
    ['location = /x { platform_webhook_signature stripe new.secret'
     . ' new.secret new.secret; platform_query POST api.t_ping(); }',
     qr/invalid parameter/, 'three files'],
);

for my $b (@bad) {
    my ($c, $re, $name) = @$b;
    conf($c);
    my ($ok, $out) = $t->nginx_t;
    ok(!$ok, "nginx -t refuses: $name");
    like($out, $re, '... saying so') or diag($out);
    unlike($out, qr/\Q$SECRET\E/, '... without the secret');
}

conf('');
$t->run;

# ---------------------------------------------------------------- accepted

my $EVENT = '{"id": "evt_1", "type": "checkout.session.completed",'
            . ' "data": {"object": {"id": "cs_1", "amount_total": 2500}}}';

{
    my $ts = time;
    my $r = post('/hook', $EVENT, sign($EVENT, t => $ts));
    is($r->{status}, 200, 'a signed body: 200') or diag($r->{content});
    is($t->json($r)->{t}, $ts, '... $platform_signature_time is its t');
    is($t->psql('SELECT body FROM public.t_hooks ORDER BY id DESC LIMIT 1'),
       $EVENT, '... the function got the body as sent');
}

{
    my $ts = time;
    my $bad = hmac_sha256_hex("$ts.$EVENT", 'whsec_wrong');
    my $good = hmac_sha256_hex("$ts.$EVENT", $SECRET);
    my $r = post('/hook', $EVENT, "t=$ts,v1=$bad,v1=$good");
    is($r->{status}, 200, 'two v1, the second matching: 200');

    $r = post('/hook', $EVENT, "v0=abc, v1=$good , t=$ts,scheme=x");
    is($r->{status}, 200, 'items in another order, spaces, v0: 200');

    $r = post('/hook', $EVENT, sign($EVENT, secret => $OLD));
    is($r->{status}, 200, 'signed with the second secret (a roll): 200');

    $r = post('/hook', $EVENT, sign($EVENT, t => time - 290));
    is($r->{status}, 200, '290 s old, within 300 s: 200');

    $r = post('/hook', '', sign(''));
    is($r->{status}, 200, 'an empty body signed: 200');
}

# A body larger than client_body_buffer_size: nginx keeps it in a file.
{
    my $big = '{"id": "evt_big", "pad": "' . ('x' x (64 * 1024)) . '"}';
    my $r = post('/hook', $big, sign($big));
    is($r->{status}, 200, 'a 64 KB body (spooled to a file): 200');
    is($t->psql('SELECT md5(body) FROM public.t_hooks ORDER BY id DESC '
                . 'LIMIT 1'),
       md5_hex($big), '... the function got all of it');

    $r = post('/hook', $big . ' ', sign($big));
    is($r->{status}, 400, '... and one byte more is refused');
}

{
    my $r = post('/hook/json', $EVENT, sign($EVENT));
    is($r->{status}, 200, '$platform_body::jsonb: 200');
    is($t->json($r)->{type}, 'checkout.session.completed', '... the event');
}

{
    my $old = time - 86400;
    my $r = post('/hook/custom', $EVENT, sign($EVENT, t => $old),
                 header => 'X-Signature');
    is($r->{status}, 200, 'tolerance=0 accepts an old t; header=X-Signature');
    is($t->json($r)->{t}, $old, '... and passes it on');

    $r = post('/hook/custom', $EVENT, sign($EVENT));
    refused($r, qr/missing/, 'header=X-Signature: Stripe-Signature alone');
}

{
    my $r = $t->get('/hook');
    is($r->{status}, 200, 'GET is not checked');
}

# ---------------------------------------------------------------- refused

{
    my $n = hooks();
    my $sig = sign($EVENT);

    (my $tampered = $EVENT) =~ s/2500/1/;
    refused(post('/hook', $tampered, $sig), qr/not valid/, 'a tampered body');
    refused(post('/hook', $EVENT, sign($EVENT, secret => 'whsec_wrong')),
            qr/not valid/, 'a wrong secret');
    # (5 s past the tolerance: t is whole seconds, our clock and nginx's
    # cached one are not)
    refused(post('/hook', $EVENT, sign($EVENT, t => time - 305)),
            qr/too old/, '305 s old');
    refused(post('/hook', $EVENT, sign($EVENT, t => time + 305)),
            qr/too old/, '305 s ahead');

    (my $other_t = $sig) =~ s/^t=(\d+)/'t=' . ($1 - 1)/e;
    refused(post('/hook', $EVENT, $other_t), qr/not valid/,
            'the signature with another t');

    refused(post('/hook', $EVENT, undef), qr/missing/, 'no header');

    for my $g ('garbage', 't=abc,v1=00', 'v1=' . ('0' x 64),
               't=' . time, 't=' . time . ',t=' . time . ',v1=' . ('0' x 64),
               't=' . time . ',v1=' . ('zz' x 32), '')
    {
        refused(post('/hook', $EVENT, $g), qr/not valid|missing/,
                "header \"$g\"");
    }

    is(hooks(), $n, 'no refused request ran the query');
}

$t->stop;

my $log = $t->error_log;
unlike($log, qr/\Q$SECRET\E|\Q$OLD\E/, 'no secret in the error log');
like($log, qr/\[info\].* platform_webhook_signature: request refused: no/,
     'refusals are logged at info');

done_testing;
