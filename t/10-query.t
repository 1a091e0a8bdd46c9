#!/usr/bin/perl

# platform_query: what a function returns is the response; arguments come
# from query arguments, regex captures, headers and the request body;
# status/headers set by SQL; 404/405/413/415 and large (spooled) bodies.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Digest::MD5 qw(md5_hex);

my $t = Test::Platform->new;

$t->psql(<<'EOF');
CREATE FUNCTION api.t_echo(a text, b int, body jsonb) RETURNS json
LANGUAGE sql AS $$
    SELECT json_build_object('a', a, 'b', b, 'body', body,
                             'a_is_null', a IS NULL, 'b_is_null', b IS NULL,
                             'body_is_null', body IS NULL)
$$;

CREATE FUNCTION api.t_named(x text DEFAULT 'dx', y text DEFAULT 'dy')
RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('x', x, 'y', y)
$$;

CREATE FUNCTION api.t_text(a text) RETURNS text LANGUAGE sql AS $$
    SELECT '{"t":' || to_json(a)::text || '}'
$$;

CREATE FUNCTION api.t_jsonb() RETURNS jsonb LANGUAGE sql AS $$
    SELECT '{"kind": "jsonb"}'::jsonb
$$;

CREATE FUNCTION api.t_create(body jsonb) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    PERFORM platform.set_status(201);
    PERFORM platform.set_header('Location', '/x/1');
    RETURN json_build_object('id', 1, 'got', body);
END
$$;

CREATE FUNCTION api.t_null() RETURNS json LANGUAGE sql AS $$
    SELECT NULL::json
$$;

CREATE FUNCTION api.t_norow() RETURNS SETOF json LANGUAGE sql AS $$
    SELECT '{}'::json WHERE false
$$;

CREATE TABLE public.t_calls (id serial PRIMARY KEY, body jsonb);
GRANT SELECT, INSERT ON public.t_calls TO platform_app;
GRANT USAGE ON SEQUENCE public.t_calls_id_seq TO platform_app;

CREATE FUNCTION api.t_insert(body jsonb) RETURNS json LANGUAGE sql AS $$
    INSERT INTO public.t_calls (body) VALUES (body)
    RETURNING json_build_object('id', id)
$$;

CREATE FUNCTION api.t_len(body jsonb) RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('len', length(body->>'pad'),
                             'md5', md5(body->>'pad'))
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /health { platform_query GET api.health(); }
        location = /version { platform_query GET api.version(); }

        location = /echo {
            platform_query GET  api.t_echo($arg_a, $arg_b::int, $platform_body::jsonb);
            platform_query POST api.t_echo($arg_a, $arg_b::int, $platform_body::jsonb);
        }

        location ~ ^/items/(\d+)/(\w+)$ {
            platform_query GET api.t_echo($2, $1::int, $platform_body::jsonb);
        }

        location = /named {
            platform_query GET api.t_echo(body => $platform_body::jsonb,
                                          b => $arg_b::int, a => $arg_a);
        }

        location = /defaults { platform_query GET api.t_named(y => $arg_y); }
        location = /hdr {
            platform_query GET api.t_echo($http_x_test, $arg_b::int, $platform_body::jsonb);
        }
        location = /text   { platform_query GET api.t_text($arg_a); }
        location = /jsonb  { platform_query GET api.t_jsonb(); }
        location = /create { platform_query POST api.t_create($platform_body::jsonb); }
        location = /null   { platform_query GET api.t_null(); }
        location = /norow  { platform_query GET api.t_norow(); }

        location = /insert {
            platform_body_max_size 1k;
            platform_query POST api.t_insert($platform_body::jsonb);
        }

        location = /types {
            platform_body_types application/json application/vnd.test+json;
            platform_query POST api.t_insert($platform_body::jsonb);
        }

        location = /big {
            client_body_buffer_size 1k;
            client_max_body_size 10m;
            platform_body_max_size 4m;
            platform_query POST api.t_len($platform_body::jsonb);
        }
    }
EOF

$t->run;

sub calls { $t->psql('SELECT count(*) FROM public.t_calls') }

sub json_ok {
    my ($r, $status, $name) = @_;
    my $ok = is($r->{status}, $status, "$name: status $status");
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: application/json");
    my $j = $t->json($r);
    $ok = ok(defined $j, "$name: body is JSON") && $ok;
    diag("$r->{status} $r->{content}") unless $ok;
    return $j;
}

sub error_body_ok {
    my ($r, $name) = @_;
    my $j = $t->json($r);
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
       && defined $j->{error}{code} && defined $j->{error}{message},
       "$name: body is {\"error\":{\"code\",\"message\"}}")
        or diag($r->{content});
}

my ($r, $j);

# ---------------------------------------------------------------- results

$r = $t->get('/health');
$j = json_ok($r, 200, 'api.health()');
is($j->{status}, 'ok', 'api.health() body comes from PostgreSQL');
is($j->{database}, $t->dbname, 'from the test database');

$j = json_ok($t->get('/version'), 200, 'api.version()');
is($j->{api_version}, 1, 'api.version() reports the API version');

$j = json_ok($t->get('/jsonb'), 200, 'jsonb result');
is_deeply($j, { kind => 'jsonb' }, 'jsonb result body');

$j = json_ok($t->get('/text?a=q'), 200, 'text result');
is_deeply($j, { t => 'q' }, 'text result body');

# ---------------------------------------------------------------- arguments

$j = json_ok($t->get('/echo?a=hello&b=42'), 200, 'query args');
is($j->{a}, 'hello', '$arg_a bound');
is($j->{b}, 42, '$arg_b::int bound and cast');
ok($j->{body_is_null}, 'no body: $platform_body is NULL');

$j = json_ok($t->get('/echo?a=&b='), 200, 'empty args');
ok($j->{a_is_null}, 'empty $arg_a is NULL');
ok($j->{b_is_null}, 'empty $arg_b::int is NULL (not a cast error)');

$j = json_ok($t->get('/echo'), 200, 'missing args');
ok($j->{a_is_null} && $j->{b_is_null}, 'missing args are NULL');

$j = json_ok($t->get("/echo?a=O'Reilly);select(1);--&b=1"), 200,
             'quotes in a value');
is($j->{a}, "O'Reilly);select(1);--", 'value bound as data, not SQL');

$j = json_ok($t->get('/items/17/widget'), 200, 'regex captures');
is($j->{a}, 'widget', '$2 bound');
is($j->{b}, 17, '$1::int bound');

$j = json_ok($t->get('/named?a=n&b=7'), 200, 'named arguments');
is($j->{a}, 'n', 'a => $arg_a');
is($j->{b}, 7, 'b => $arg_b::int');

$j = json_ok($t->get('/defaults?y=Y'), 200, 'named, others defaulted');
is_deeply($j, { x => 'dx', y => 'Y' }, 'unnamed parameter keeps its default');

$j = json_ok($t->get('/hdr?b=3', headers => { 'X-Test' => 'from header' }),
             200, '$http_x_test');
is($j->{a}, 'from header', 'request header bound');

# ---------------------------------------------------------------- body

my $doc = { k => [1, 2, { z => undef }], name => "Zo\x{eb} \x{2713}" };
require JSON::PP;
my $enc = JSON::PP->new->utf8->canonical;

$j = json_ok($t->req('POST', '/echo?a=p', body => $enc->encode($doc)),
             200, 'POST body');
is_deeply($j->{body}, $doc, '$platform_body::jsonb arrives intact (UTF-8)');
is($j->{a}, 'p', 'with query args');

$j = json_ok($t->req('POST', '/echo', body => '{"x":1}',
                     headers => { 'Content-Type' =>
                                  'application/json; charset=utf-8' }),
             200, 'content type with parameters');
is_deeply($j->{body}, { x => 1 }, 'charset parameter ignored');

$r = $t->req('POST', '/echo', body => 'not json');
is($r->{status}, 400, 'invalid JSON body: 400 (22P02)');
error_body_ok($r, 'invalid JSON body');

# ---------------------------------------------------------------- status

$r = $t->req('POST', '/create', body => '{"title":"t"}');
$j = json_ok($r, 201, 'platform.set_status(201)');
is($r->{headers}{location}, '/x/1', "platform.set_header('Location')");
is_deeply($j, { id => 1, got => { title => 't' } }, 'with the body');

$r = $t->get('/null');
json_ok($r, 404, 'NULL result');
error_body_ok($r, 'NULL result');

$r = $t->get('/norow');
json_ok($r, 404, 'no row');
error_body_ok($r, 'no row');

# ---------------------------------------------------------------- methods

$r = $t->req('DELETE', '/echo');
is($r->{status}, 405, 'unconfigured method: 405');
my $allow = $r->{headers}{allow} // '';
like($allow, qr/\bGET\b/, 'Allow lists GET');
like($allow, qr/\bPOST\b/, 'Allow lists POST');
unlike($allow, qr/\bDELETE\b/, 'Allow does not list DELETE');

$r = $t->req('PUT', '/health', body => '{}');
is($r->{status}, 405, 'PUT on a GET location: 405');
like($r->{headers}{allow} // '', qr/\bGET\b/, 'Allow: GET');

$r = $t->req('GET', '/create');
is($r->{status}, 405, 'GET on a POST location: 405');
like($r->{headers}{allow} // '', qr/\bPOST\b/, 'Allow: POST');

$r = $t->req('HEAD', '/health');
is($r->{status}, 200, 'HEAD on a GET location: 200');
is($r->{content} // '', '', 'HEAD: no body');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     'HEAD: content type');

$r = $t->req('HEAD', '/create');
is($r->{status}, 405, 'HEAD on a POST-only location: 405');

is($t->get('/health')->{status}, 200, 'keep-alive connection still fine');

# ---------------------------------------------------------------- 413, 415

is(calls(), 0, 'no calls yet');

$r = $t->req('POST', '/insert', body => '{"pad":"' . ('x' x 2000) . '"}');
is($r->{status}, 413, 'body over platform_body_max_size: 413');
is(calls(), 0, '413: no query was made');

{
    # The same without Content-Length (chunked): counted while reading.
    my @chunks = ('{"pad":"', ('y' x 700) x 3, '"}');
    $r = $t->req('POST', '/insert', body => sub { shift @chunks });
    is($r->{status}, 413, 'chunked body over the limit: 413');
    is(calls(), 0, 'chunked 413: no query was made');
}

$r = $t->req('POST', '/insert', body => '{"pad":"small"}');
is($r->{status}, 200, 'body under the limit: 200');
is(calls(), 1, 'one query made');

$r = $t->req('POST', '/insert', body => '{"a":1}',
             headers => { 'Content-Type' => 'text/plain' });
is($r->{status}, 415, 'text/plain body: 415');
is(calls(), 1, '415: no query was made');

$r = $t->req('POST', '/insert', body => '{"a":1}',
             headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
is($r->{status}, 415, 'form body: 415');

$r = $t->req('POST', '/types', body => '{"a":1}',
             headers => { 'Content-Type' => 'application/vnd.test+json' });
is($r->{status}, 200, 'platform_body_types: listed type accepted');

$r = $t->req('POST', '/types', body => '{"a":1}',
             headers => { 'Content-Type' => 'text/plain' });
is($r->{status}, 415, 'platform_body_types: unlisted type 415');
is(calls(), 2, 'only the accepted request made a query');

$r = $t->req('POST', '/echo', headers => { 'Content-Type' => 'text/plain' });
$j = json_ok($r, 200, 'empty body with any content type');
ok($j->{body_is_null}, 'empty body is NULL');

# ---------------------------------------------------------------- spooled

my $pad = join '', map { chr(97 + $_ % 26) } 1 .. 300_000;
$r = $t->req('POST', '/big', body => qq({"pad":"$pad"}));
$j = json_ok($r, 200, 'large body');
is($j->{len}, 300_000, 'large body arrives whole in $platform_body');
is($j->{md5}, md5_hex($pad), 'large body arrives intact');
like($t->error_log, qr/client request body is buffered to a temporary file/,
     'the body was spooled to a temporary file by nginx');

is($t->get('/health')->{status}, 200, 'still healthy at the end');

done_testing;
