#!/usr/bin/perl

# The module loads, accepts the documented configuration and refuses bad
# directive arguments at `nginx -t` with a message naming the directive.

use strict;
use warnings;

use Test::More;
use Test::Platform;
use Time::HiRes qw(time);

my $t = Test::Platform->new;

ok($t->has_module, 'module file exists') or diag("no $t->{module}");

# ---------------------------------------------------------------- good

# The example of docs/directives.md, with our socket, database and port.
$t->http_conf(<<'EOF');
    platform_pg main {
        server            "%%CONNINFO%%";
        pool_size         4;
        pipeline_depth    8;
        queue             256 timeout=5s;
        connect_timeout   5s;
        query_timeout     30s;
        reconnect_backoff 100ms 10s;
    }

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /api/health {
            platform_query GET api.health();
        }

        location ~ ^/api/items/(\d+)$ {
            platform_query GET    api.item_get($1::bigint);
            platform_query PUT    api.item_put($1::bigint, $platform_body::jsonb);
            platform_query DELETE api.item_delete($1::bigint);
        }

        location = /api/items {
            platform_query GET  api.items_list(after => $arg_after, lim => $arg_limit::int);
            platform_query POST api.item_create($platform_body::jsonb);
        }

        location = /status {
            allow 127.0.0.1;
            deny all;
            platform_status;
        }
    }
EOF

my ($ok, $out) = $t->nginx_t;
ok($ok, 'nginx -t: the documented example') or diag($out);
like($out, qr/syntax is ok/, 'syntax is ok');

# Minimal: defaults everywhere, platform_pg_pass by default the first block,
# explicit platform_pg_pass, a second block, body directives at all levels.
$t->http_conf(<<'EOF');
    platform_body_max_size 64k;
    platform_body_types application/json application/merge-patch+json;

    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }
    platform_pg other {
        server "hostaddr=127.0.0.1 port=%%PGPORT%% dbname=%%DBNAME%% user=platform_app";
        pool_size 1;
        pipeline_depth 1;
        queue 1 timeout=1s;
    }
    platform_pg third {
        server "host=127.0.0.1 port=%%PGPORT%% dbname=%%DBNAME%% user=platform_app connect_timeout=3";
    }

    server {
        listen 127.0.0.1:%%PORT%%;
        platform_body_max_size 1m;

        location = /h { platform_query GET api.health(); }
        location = /o {
            platform_pg_pass other;
            platform_body_types application/json;
            platform_query GET api.health();
            platform_query POST api.health();
        }
        location /s { platform_pg_pass third; platform_status; }
    }
EOF

($ok, $out) = $t->nginx_t;
ok($ok, 'nginx -t: two blocks, numeric host/hostaddr, defaults') or diag($out);

# ---------------------------------------------------------------- bad

my @bad = (
    [ 'unknown platform_pg in platform_pg_pass', 'platform_pg_pass', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_pg_pass nosuch; platform_query GET api.health(); }
    }
EOF
    [ 'pool_size 0', 'pool_size', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; pool_size 0; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
    [ 'unknown method', 'platform_query', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query FOO api.x(); }
    }
EOF
    [ 'not a function call', 'platform_query', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET not a function; }
    }
EOF
    [ 'unbalanced parentheses', 'platform_query', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(; }
    }
EOF
    [ 'conninfo with a DNS name', '"server".*is a name', <<'EOF' ],
    platform_pg main {
        server "host=db.example.com dbname=platform user=platform_app";
    }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
    [ 'conninfo libpq cannot parse', 'platform_pg|server', <<'EOF' ],
    platform_pg main { server "host=/tmp dbname='unterminated"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
    [ 'platform_pg without server', 'platform_pg|server', <<'EOF' ],
    platform_pg main { pool_size 2; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
    [ 'duplicate method in a location', 'platform_query', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x {
            platform_query GET api.health();
            platform_query GET api.version();
        }
    }
EOF
    [ 'platform_query in http context', 'platform_query', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    platform_query GET api.health();
    server {
        listen 127.0.0.1:%%PORT%%;
    }
EOF
    [ 'platform_query without any platform_pg', 'platform_query|platform_pg',
      <<'EOF' ],
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
    [ 'duplicate platform_pg name', 'platform_pg', <<'EOF' ],
    platform_pg main { server "%%CONNINFO%%"; }
    platform_pg main { server "%%CONNINFO%%"; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /x { platform_query GET api.health(); }
    }
EOF
);

for my $case (@bad) {
    my ($name, $directive, $conf) = @$case;

    $t->http_conf($conf);

    my $t0 = time;
    my ($ok, $out) = $t->nginx_t;
    my $took = time - $t0;

    ok(!$ok, "nginx -t fails: $name");
    like($out, qr/\[emerg\].*(?:$directive)/,
         "$name: the error names $directive")
        or diag($out);
    unlike($out, qr/signal|Sanitizer|runtime error/, "$name: no crash")
        or diag($out);
    cmp_ok($took, '<', 5, "$name: answered at once (no DNS, no connect)");
}

# ---------------------------------------------------------------- runs

# And it starts, answers and stops cleanly (the harness checks the log).
$t->http_conf(<<'EOF');
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /h { platform_query GET api.health(); }
    }
EOF

$t->run;

# Right after the start: the request waits for the pool's first connection.
my $r = $t->get('/h');
is($r->{status}, 200, 'GET api.health() through the module')
    or diag(explain($r));

$t->stop;

done_testing;
