#!/usr/bin/perl

# Errors raised by PostgreSQL are answered by SQLSTATE, with the body
# {"error":{"code":"<sqlstate>","message":...}}; a 500 never echoes the
# server's message.

use strict;
use warnings;

use Test::More;
use Test::Platform;

my $t = Test::Platform->new;

$t->psql(<<'EOF');
CREATE FUNCTION api.t_raise(code text) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code,
                          MESSAGE = 'boom secret-internal-detail ' || code;
END
$$;

CREATE FUNCTION api.t_raise_msg(msg text) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', msg;      -- P0001
END
$$;

CREATE TABLE public.t_uniq (id int PRIMARY KEY, name text NOT NULL);
GRANT SELECT, INSERT ON public.t_uniq TO platform_app;

CREATE FUNCTION api.t_uniq_insert(id int, name text) RETURNS json
LANGUAGE sql AS $$
    INSERT INTO public.t_uniq VALUES (id, name)
    RETURNING json_build_object('id', id)
$$;

CREATE FUNCTION api.t_div(a int, b int) RETURNS json LANGUAGE sql AS $$
    SELECT json_build_object('q', a / b)
$$;

CREATE TABLE public.t_secret (v text);
REVOKE ALL ON public.t_secret FROM PUBLIC;

CREATE FUNCTION api.t_secret() RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT json_agg(v) FROM public.t_secret);
END
$$;

CREATE FUNCTION api.t_missing_table() RETURNS json LANGUAGE plpgsql AS $$
BEGIN
    RETURN (SELECT json_agg(x) FROM public.t_no_such_table x);
END
$$;
EOF

$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /raise     { platform_query GET api.t_raise($arg_code); }
        location = /raise_msg { platform_query GET api.t_raise_msg($arg_msg); }
        location = /uniq {
            platform_query POST api.t_uniq_insert($arg_id::int, $arg_name);
        }
        location = /div       { platform_query GET api.t_div($arg_a::int, $arg_b::int); }
        location = /secret    { platform_query GET api.t_secret(); }
        location = /nofunc    { platform_query GET api.t_no_such_function($arg_a); }
        location = /notable   { platform_query GET api.t_missing_table(); }
        location = /health    { platform_query GET api.health(); }
    }
EOF

$t->run;

sub check_error {
    my ($r, $status, $code, $name) = @_;

    is($r->{status}, $status, "$name: $status") or diag($r->{content});
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: application/json");

    my $j = $t->json($r);
    my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error} : {};
    is($e->{code}, $code, "$name: error.code $code") or diag($r->{content});
    ok(defined $e->{message} && !ref $e->{message} && length $e->{message},
       "$name: error.message is a string") or diag($r->{content});

    if ($status == 500) {
        unlike($r->{content}, qr/secret-internal-detail/,
               "$name: the server's message is not echoed");
    }

    return $e;
}

# ---------------------------------------------------------------- table

my @table = (
    # SQLSTATE => HTTP status
    [ '23505' => 409 ],    # unique_violation
    [ '23503' => 409 ],    # foreign_key_violation
    [ '23P01' => 409 ],    # exclusion_violation
    [ '40001' => 409 ],    # serialization_failure
    [ '40P01' => 409 ],    # deadlock_detected
    [ '22P02' => 400 ],    # invalid_text_representation
    [ '22023' => 400 ],    # invalid_parameter_value
    [ '22001' => 400 ],    # string_data_right_truncation
    [ '23502' => 400 ],    # not_null_violation
    [ '23514' => 400 ],    # check_violation
    [ 'P0001' => 400 ],    # raise_exception
    [ '42501' => 403 ],    # insufficient_privilege
    [ '28000' => 403 ],    # invalid_authorization_specification
    [ '28P01' => 403 ],    # invalid_password
    [ '42883' => 404 ],    # undefined_function
    [ '42P01' => 404 ],    # undefined_table
    [ '25006' => 405 ],    # read_only_sql_transaction
    [ '08000' => 503 ],    # connection_exception
    [ '08006' => 503 ],    # connection_failure
    [ '53300' => 503 ],    # too_many_connections
    [ '53100' => 503 ],    # disk_full
    [ '57P01' => 503 ],    # admin_shutdown
    [ '57014' => 504 ],    # query_canceled
    [ 'XX000' => 500 ],    # internal_error
    [ '42601' => 500 ],    # syntax_error: any other code
    [ '0A000' => 500 ],    # feature_not_supported
    [ 'P0002' => 500 ],    # no_data_found
    [ 'PT402' => 402 ],    # custom PTnnn codes: that status
    [ 'PT404' => 404 ],
    [ 'PT418' => 418 ],
    [ 'PT422' => 422 ],
);

for my $row (@table) {
    my ($code, $status) = @$row;
    my $r = $t->get("/raise?code=$code");
    check_error($r, $status, $code, "RAISE $code");
}

# P0001: the function's own message is meant for the client.
{
    my $r = $t->get('/raise_msg?msg=Event+is+full');
    my $e = check_error($r, 400, 'P0001', 'RAISE message');
    like($e->{message} // '', qr/Event\+is\+full|Event is full/,
         'P0001: the message is echoed');
}

# ---------------------------------------------------------------- real ones

{
    my $r = $t->req('POST', '/uniq?id=1&name=a');
    is($r->{status}, 200, 'first insert: 200') or diag($r->{content});

    $r = $t->req('POST', '/uniq?id=1&name=b');
    check_error($r, 409, '23505', 'real unique violation');

    $r = $t->req('POST', '/uniq?id=2');
    check_error($r, 400, '23502', 'real not-null violation');

    $r = $t->get('/div?a=1&b=0');
    check_error($r, 400, '22012', 'real division by zero');

    $r = $t->get('/div?a=1&b=x');
    check_error($r, 400, '22P02', 'real bad integer argument');

    $r = $t->get('/div?a=6&b=3');
    is($r->{status}, 200, 'division: 200');
    is_deeply($t->json($r), { q => 2 }, 'division result');

    $r = $t->get('/secret');
    check_error($r, 403, '42501', 'real missing grant');

    $r = $t->get('/nofunc?a=1');
    check_error($r, 404, '42883', 'real undefined function');

    $r = $t->get('/notable');
    check_error($r, 404, '42P01', 'real undefined table');
}

# Errors leave the pool usable: every connection still answers.
for (1 .. 6) {
    my $r = $t->get('/health');
    is($r->{status}, 200, "healthy after errors ($_)");
}

done_testing;
