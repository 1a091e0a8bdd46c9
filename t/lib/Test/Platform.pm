package Test::Platform;

# Test harness for ngx_platform_module, in the style of nginx-tests.
#
#   use Test::More;
#   use Test::Platform;
#
#   my $t = Test::Platform->new(workers => 1);
#   $t->http_conf(<<'EOF');
#       platform_pg main { server "%%CONNINFO%%"; }
#       server {
#           listen 127.0.0.1:%%PORT%%;
#           location = /h { platform_query GET api.health(); }
#       }
#   EOF
#   $t->run;
#   is($t->get('/h')->{status}, 200, 'health');
#   done_testing;
#
# Each object has a temporary directory (nginx.conf, error.log, temp paths),
# two free TCP ports on 127.0.0.1 and, when first needed, a database of its
# own created from a migrated template (CREATE DATABASE ... TEMPLATE).
#
# Environment (all optional; `make test` sets them):
#
#   PLATFORM_ROOT           repository root (default: from this file's path)
#   PLATFORM_NGINX          nginx binary (default /usr/sbin/nginx)
#   PLATFORM_MODULE         module (default $ROOT/build/ngx_platform_module.so)
#   PLATFORM_TEST_PGHOST    socket directory of a shared PostgreSQL cluster;
#   PLATFORM_TEST_PGPORT    its port (default 5432);
#   PLATFORM_TEST_TEMPLATE  its migrated template (default platform_template).
#                           Without PLATFORM_TEST_PGHOST the harness makes a
#                           private cluster with tools/pg-cluster and migrates
#                           a template with tools/migrate.
#   PLATFORM_SAN_LOG_DIR    sanitizer log directory: new asan.* / ubsan.*
#                           files there fail the test file.
#   PLATFORM_TEST_KEEP=1    keep the temporary directory (for debugging).
#
# Methods:
#
#   new(workers => N, own_cluster => 1)   own_cluster: a private cluster
#                           (for pg_stop/pg_start), even under `make test`
#   http_conf(TEXT), main_conf(TEXT)      the body of http{}, extra main
#                           lines; placeholders %%PORT%% %%PORT2%%
#                           %%CONNINFO%% %%TESTDIR%% %%ROOT%% %%PGHOST%%
#                           %%PGPORT%% %%DBNAME%%
#   api_conf(AREA..., {VAR => VALUE})    server-block lines that set the
#                           variables conf/api/*.conf use ($platform_public_url
#                           = this server, generous link limits, terms and
#                           consent versions, the hold of a paid place;
#                           override in the hash) and include
#                           conf/api/AREA.conf: tests run the locations
#                           `make run` serves
#   key_file([NAME])        32 random bytes in TESTDIR/NAME (default
#                           session.key), mode 0600: a key for
#                           platform_session_key; returns the path
#   nginx_t                 (ok, output) of nginx -t
#   run, reload, stop       start (waits for the ports and workers), HUP and
#                           wait for new workers, QUIT and check
#   req(METHOD, PATH, headers => {}, body => ..., fresh => 1, timeout => S)
#   get(PATH, ...)          HTTP::Tiny response + {elapsed}
#   req_async(...), wait_async(H)   the same from a forked child
#   json(RESPONSE), metrics(PATH), sample(METRICS, NAME, LABEL => V)
#   psql(SQL, user => ...)  as postgres on the test database; trimmed stdout
#   pg_stop, pg_start       own cluster only
#   worker_pids, nginx_pid, error_log, testdir, port, port2, dbname,
#   conninfo, pghost, pgport, root, ignore_log(qr//)
#   concurrent_posts(PATH, BODIES)  all on connections of their own at once
#
# Functions (use Test::Platform qw(...)):
#   wait_for(SECS, CODE [, NAP])   CODE's first true value, or its last
#   field_of(RESPONSE)             "400 name" from a "field: name" error
#   confirm_token(TEXT)            the token of a /confirm.html#token= link
#   browser_dir()                  t/browser, ready; skips without Chromium
#
# The SMTP sink also has mails_to(ADDRESS) and wait_mail(ADDRESS, RE, SECS).
#
# On stop() and at exit nginx is stopped and checked: any [alert], [emerg],
# crashed worker ("exited on signal"), sanitizer report, a master that did
# not exit cleanly on SIGQUIT (no "exit" line, pid file left: it crashed) or
# a worker that outlived its master fails the test file, with the offending
# lines as diagnostics.  Then the test database is dropped, a private
# cluster stopped and the temporary directory removed.

use strict;
use warnings;

use Cwd qw(abs_path);
use Errno qw(EINTR);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Storable qw(freeze thaw);
use Test::More ();
use Time::HiRes qw(time sleep);

our $VERSION = '0.01';

use Exporter qw(import);
our @EXPORT_OK = qw(wait_for field_of confirm_token browser_dir);

my @INSTANCES;
my $SEQ = 0;

# Let END blocks run (and stop nginx, drop the database) when prove or a
# person interrupts us, or our output goes away (SIGPIPE).
for my $sig (qw(INT TERM HUP PIPE)) {
    next if ref $SIG{$sig};
    $SIG{$sig} = sub {
        $SIG{PIPE} = 'IGNORE';
        print STDERR "# caught SIG$sig\n";
        exit 1;
    };
}

my $BAD_LOG = qr/\[alert\]|\[emerg\]|exited on signal|AddressSanitizer
                 |LeakSanitizer|runtime\ error:|ERROR:\ .*Sanitizer/x;

sub new {
    my ($class, %o) = @_;

    my $root = $ENV{PLATFORM_ROOT}
        || abs_path(dirname(abs_path(__FILE__)) . '/../../..');

    my $self = bless {
        root        => $root,
        nginx       => $ENV{PLATFORM_NGINX} || '/usr/sbin/nginx',
        module      => $ENV{PLATFORM_MODULE}
                       || "$root/build/ngx_platform_module.so",
        workers     => $o{workers} // 1,
        own_cluster => $o{own_cluster} // 0,
        load_module => $o{load_module},
        http_conf   => '',
        main_conf   => '',
        owner       => $$,
        seq         => ++$SEQ,
        ua          => {},
        log_offset  => 0,
        ignore_log  => [],
        failures    => [],
        workers_seen => {},
    }, $class;

    $self->{testdir} = tempdir('platform-t-XXXXXX', TMPDIR => 1,
                               CLEANUP => 0);
    # The private cluster lives below: its owner `postgres` must get in.
    chmod 0755, $self->{testdir};

    $self->_alloc_ports;

    if (my $d = $ENV{PLATFORM_SAN_LOG_DIR}) {
        $self->{san_before} = { map { $_ => 1 } _san_files($d) };
    }

    push @INSTANCES, $self;
    return $self;
}

# ---------------------------------------------------------------- accessors

sub root    { $_[0]{root} }
sub testdir { $_[0]{testdir} }
sub port    { $_[0]{port} }
sub port2   { $_[0]{port2} }
sub nginx_pid { $_[0]{pid} }

sub dbname   { $_[0]->_db; $_[0]{dbname} }
sub pghost   { $_[0]->_db; $_[0]{pghost} }
sub pgport   { $_[0]->_db; $_[0]{pgport} }
sub conninfo {
    my ($self) = @_;
    $self->_db;
    return "host=$self->{pghost} port=$self->{pgport} "
        . "dbname=$self->{dbname} user=platform_app";
}

sub has_module { -f $_[0]{module} }

# ---------------------------------------------------------------- config

sub http_conf { my ($self, $c) = @_; $self->{http_conf} = $c; $self }
sub main_conf { my ($self, $c) = @_; $self->{main_conf} = $c; $self }

sub api_conf {
    my ($self, @areas) = @_;
    my $over = ref $areas[-1] eq 'HASH' ? pop @areas : {};

    my %set = (public_url => 'http://127.0.0.1:%%PORT%%',
               links_per_email => 100, links_per_ip => 1000,
               terms_version => 'terms-1', consent_version => 'privacy-1',
               hold_seconds => 1800, mail_rate => 10, %$over);

    return join('', map({ "set \$platform_$_ $set{$_};\n" } sort keys %set),
                map({ "include %%ROOT%%/conf/api/$_.conf;\n" } @areas));
}

sub key_file {
    my ($self, $name) = @_;
    my $path = "$self->{testdir}/" . ($name // 'session.key');

    open(my $in, '<:raw', '/dev/urandom') or die "urandom: $!\n";
    read($in, my $key, 32) == 32 or die "urandom: short read\n";
    close $in;
    open(my $out, '>:raw', $path) or die "$path: $!\n";
    print $out $key;
    close $out;
    chmod 0600, $path;

    return $path;
}

# Lines matching qr// are not counted as errors in the error log check.
sub ignore_log { my ($self, $re) = @_; push @{$self->{ignore_log}}, $re; $self }

sub _subst {
    my ($self, $text) = @_;

    my %v = (
        PORT    => sub { $self->{port} },
        PORT2   => sub { $self->{port2} },
        TESTDIR => sub { $self->{testdir} },
        ROOT    => sub { $self->{root} },
        CONNINFO => sub { $self->conninfo },
        PGHOST  => sub { $self->pghost },
        PGPORT  => sub { $self->pgport },
        DBNAME  => sub { $self->dbname },
    );

    $text =~ s{%%(\w+)%%}{
        $v{$1} ? $v{$1}->() : die "unknown placeholder %%$1%%\n"
    }ge;

    return $text;
}

sub _conf_text {
    my ($self) = @_;

    my $d = $self->{testdir};
    my $http = $self->_subst($self->{http_conf});
    my $main = $self->_subst($self->{main_conf});

    my $load = $self->{load_module} // -f $self->{module};
    my $conf = '';

    $conf .= "load_module $self->{module};\n\n" if $load;
    $conf .= "user root;\n" if $> == 0;
    $conf .= <<"EOF";
daemon on;
master_process on;
worker_processes $self->{workers};
pid $d/nginx.pid;
error_log $d/error.log info;

$main

events {
    worker_connections 1024;
}

http {
    access_log $d/access.log;

    client_body_temp_path $d/client_body_temp;
    proxy_temp_path       $d/proxy_temp;
    fastcgi_temp_path     $d/fastcgi_temp;
    uwsgi_temp_path       $d/uwsgi_temp;
    scgi_temp_path        $d/scgi_temp;

    types {
        text/html               html;
        text/css                css;
        application/javascript  js mjs;
        application/json        json;
        image/svg+xml           svg;
        image/png               png;
        text/plain              txt;
    }
    default_type application/octet-stream;

$http
}
EOF

    return $conf;
}

sub write_conf {
    my ($self) = @_;
    my $file = "$self->{testdir}/nginx.conf";
    _write_file($file, $self->_conf_text);
    return $file;
}

# ---------------------------------------------------------------- nginx

# nginx -t on the configuration: (ok, combined output).
sub nginx_t {
    my ($self) = @_;

    my $conf = $self->write_conf;
    my ($rc, $out, $err) = $self->_capture(
        [$self->{nginx}, '-t', '-p', "$self->{testdir}/", '-c', $conf]);

    $err .= "\nnginx -t exited on signal " . ($rc - 128) . "\n" if $rc > 128;

    return ($rc == 0, $out . $err);
}

sub run {
    my ($self) = @_;

    die "nginx is already running\n" if $self->{pid};

    unlink "$self->{testdir}/nginx.pid";

    for my $try (1 .. 3) {
        my $conf = $self->write_conf;
        my $elog = "$self->{testdir}/error.log";
        my $before = -s $elog || 0;

        my ($rc, $out, $err) = $self->_capture(
            [$self->{nginx}, '-p', "$self->{testdir}/", '-c', $conf,
             '-e', $elog]);

        if ($rc != 0) {
            my $log = _tail(_slurp($elog, $before), 40);

            if ($try < 3 && "$out$err$log" =~ /Address already in use/) {
                # Another test took our port in the meantime: new ports.
                $self->_alloc_ports;
                next;
            }

            die "nginx failed to start (exit $rc):\n$out$err\n$log\n";
        }

        $self->{pid} = $self->_read_pid(5)
            or die "nginx: no pid file\n" . _tail(_slurp($elog), 40);

        last;
    }

    my $text = $self->{http_conf};
    for my $p (qw(PORT PORT2)) {
        next unless $text =~ /%%$p%%/;
        $self->_wait_port($self->{lc $p}, 10)
            or die "nginx does not listen on port " . $self->{lc $p} . "\n"
                   . _tail($self->error_log, 40);
    }

    $self->_wait_workers(10);
    return $self;
}

sub stop {
    my ($self) = @_;

    $self->_close_clients;

    my @problems;
    my $pidfile = "$self->{testdir}/nginx.pid";

    if (my $pid = delete $self->{pid}) {
        $self->worker_pids;

        if (!_alive($pid)) {
            push @problems, "nginx master $pid had died before stop";

        } else {
            my $sig = _stop_pid($pid);

            if ($sig ne 'QUIT') {
                push @problems, "nginx master $pid did not exit on SIGQUIT "
                                . "(stopped with SIG$sig)";

            } elsif ($self->error_log !~ /\b$pid#$pid: exit$/m
                     || -e $pidfile)
            {
                # A master that exits normally says so and removes its pid
                # file; one that crashed (nobody reports its signal) does
                # neither.
                push @problems, "nginx master $pid did not exit cleanly "
                                . "(no \"exit\" in the error log"
                                . (-e $pidfile ? ', pid file left' : '')
                                . '): it crashed';
            }
        }

        # Workers left behind by a master that died.
        for my $w (keys %{$self->{workers_seen}}) {
            my $cmd = _slurp("/proc/$w/cmdline") // next;
            next unless $cmd =~ /^nginx: worker process/;
            push @problems, "worker $w outlived its master";
            kill 'KILL', $w;
        }
        $self->{workers_seen} = {};

        unlink $pidfile;
    }

    $self->_check_logs(@problems);
    return $self;
}

sub reload {
    my ($self) = @_;

    my $pid = $self->{pid} or die "nginx is not running\n";
    my %old = map { $_ => 1 } $self->worker_pids;

    $self->write_conf;
    $self->_close_clients;
    kill 'HUP', $pid or die "kill HUP $pid: $!\n";

    my $deadline = time + 15;
    while (time < $deadline) {
        last unless _alive($pid);
        my @now = $self->worker_pids;
        my @new = grep { !$old{$_} } @now;
        my @left = grep { _alive($_) } keys %old;
        last if @new >= $self->{workers} && !@left;
        sleep 0.05;
    }

    die "nginx master $pid died during reload\n" . _tail($self->error_log, 20)
        unless _alive($pid);

    $self->_wait_workers(5);
    return $self;
}

# Worker processes (children of the master whose title says so).
sub worker_pids {
    my ($self) = @_;

    my $master = $self->{pid} or return ();
    my @pids;

    opendir(my $dh, '/proc') or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        my $stat = _slurp("/proc/$p/stat") // next;
        $stat =~ /\)\s+\S+\s+(\d+)/ or next;
        next unless $1 == $master;
        my $cmd = _slurp("/proc/$p/cmdline") // next;
        next unless $cmd =~ /worker process/;
        next if $cmd =~ /shutting down/;
        push @pids, $p;
    }
    closedir $dh;

    @pids = sort { $a <=> $b } @pids;
    $self->{workers_seen}{$_} = 1 for @pids;
    return @pids;
}

sub error_log {
    my ($self) = @_;
    return _slurp("$self->{testdir}/error.log") // '';
}

# ---------------------------------------------------------------- HTTP

# req(METHOD, PATH, headers => {}, body => '...', port => N, timeout => S,
#     fresh => 1)
# A keep-alive connection per port is reused unless fresh => 1.  Returns HTTP::Tiny's response hashref plus {elapsed} in seconds.
# A body without a Content-Type header is sent as application/json.
sub req {
    my ($self, $method, $path, %o) = @_;

    my $port = $o{port} || $self->{port};
    my $ua = $o{fresh} ? _ua($o{timeout})
                       : ($self->{ua}{$port} ||= _ua($o{timeout}));
    $ua->timeout($o{timeout}) if $o{timeout};

    my %opt = (headers => { %{$o{headers} || {}} });
    if (defined $o{body}) {
        $opt{content} = $o{body};
        $opt{headers}{'content-type'} = 'application/json'
            unless grep { lc $_ eq 'content-type' } keys %{$opt{headers}};
    }

    my $t0 = time;
    my $r = $ua->request($method, "http://127.0.0.1:$port$path", \%opt);
    $r->{elapsed} = time - $t0;

    $ua->timeout(30) if $o{timeout};
    return $r;
}

sub get { my ($self, $path, %o) = @_; $self->req('GET', $path, %o) }

# The same request from a forked child on a fresh connection: returns a
# handle for wait_async().  For concurrency tests.
sub req_async {
    my ($self, $method, $path, %o) = @_;

    pipe(my $rd, my $wr) or die "pipe: $!\n";
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        close $rd;
        my $r = eval {
            $self->{ua} = {};
            $self->req($method, $path, %o);
        } || { status => 599, content => "$@", headers => {} };
        print $wr freeze($r);
        close $wr;
        POSIX::_exit(0);
    }

    close $wr;
    return { pid => $pid, fh => $rd, start => time };
}

sub wait_async {
    my ($self, $h) = @_;

    my $fh = $h->{fh};
    local $/;
    my $data = <$fh>;
    close $fh;
    waitpid($h->{pid}, 0);

    return $data ? thaw($data)
                 : { status => 599, content => 'no answer', headers => {} };
}

# The response body decoded as JSON (undef when it is not JSON).
sub json {
    my ($self, $r) = @_;
    require JSON::PP;
    return eval { JSON::PP->new->utf8->allow_nonref->decode($r->{content}) };
}

# GETs a Prometheus text page; returns a hashref of samples keyed by
# 'name{label="v",...}' with the labels sorted by name (just 'name' without
# labels), plus {_TYPE}{name} = type and {_response} = the response.
sub metrics {
    my ($self, $path, %o) = @_;

    my $r = $self->get($path, %o);
    my %m = (_response => $r, _TYPE => {});

    for my $line (split /\n/, $r->{content} // '') {
        if ($line =~ /^#\s+TYPE\s+(\S+)\s+(\S+)/) {
            $m{_TYPE}{$1} = $2;
            next;
        }
        next if $line =~ /^\s*(#|$)/;
        $line =~ /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/ or next;
        my ($name, $labels, $v) = ($1, $2 // '', $3);
        my %l = $labels =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
        my $key = %l ? "$name\{"
                     . join(',', map { qq{$_="$l{$_}"} } sort keys %l) . '}'
                     : $name;
        $m{$key} = $v;
    }

    return \%m;
}

# HTTP::Tiny writes a request's head and body separately: without
# TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to each request
# with a body.
{
    no warnings 'redefine';
    my $connect = \&HTTP::Tiny::Handle::connect;
    *HTTP::Tiny::Handle::connect = sub {
        my $h = $connect->(@_);
        setsockopt($h->{fh}, IPPROTO_TCP, TCP_NODELAY, 1)
            if ref $h && $h->{fh};
        return $h;
    };
}

# One sample of a metrics() result: sample($m, 'name', label => 'v', ...).
sub sample {
    my ($self, $m, $name, %l) = @_;
    my $key = %l ? "$name\{"
                 . join(',', map { qq{$_="$l{$_}"} } sort keys %l) . '}'
                 : $name;
    return $m->{$key};
}

sub _ua {
    my ($timeout) = @_;
    return HTTP::Tiny->new(keep_alive => 1, timeout => $timeout || 30,
                           max_redirect => 0, agent => 'platform-test/1');
}

sub _close_clients { $_[0]{ua} = {} }

# ---------------------------------------------------------------- database

# Runs SQL with psql as the superuser (or user => NAME) on the test
# database; returns trimmed stdout, dies with psql's stderr on error.
sub psql {
    my ($self, $sql, %o) = @_;

    $self->_db;
    return $self->_psql($o{db} // $self->{dbname}, $sql, %o);
}

sub _psql {
    my ($self, $db, $sql, %o) = @_;

    my $file = "$self->{testdir}/psql.$$.sql";
    _write_file($file, $sql);

    local $ENV{PGHOST} = $self->{pghost};
    local $ENV{PGPORT} = $self->{pgport};
    local $ENV{PGOPTIONS} = '-c client_min_messages=warning';
    local $ENV{PGCONNECT_TIMEOUT} = 10;

    my ($rc, $out, $err) = $self->_capture(
        ['psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1',
         '-U', $o{user} // 'postgres', '-d', $db, '-f', $file],
        timeout => $o{timeout} || 120);
    unlink $file;

    die "psql failed ($rc): $err\nSQL: $sql\n" if $rc != 0;

    $out =~ s/^\s+|\s+$//g;
    return $out;
}

sub pg_stop {
    my ($self) = @_;
    die "pg_stop needs own_cluster => 1\n" unless $self->{cluster};
    $self->_tool('pg-cluster', 'stop', $self->{cluster});
    return $self;
}

sub pg_start {
    my ($self) = @_;
    die "pg_start needs own_cluster => 1\n" unless $self->{cluster};
    $self->_tool('pg-cluster', 'start', $self->{cluster});
    return $self;
}

# Creates the test database when first needed.
sub _db {
    my ($self) = @_;

    return if $self->{dbname};

    my $template;

    if (!$self->{own_cluster} && $ENV{PLATFORM_TEST_PGHOST}) {
        $self->{pghost} = $ENV{PLATFORM_TEST_PGHOST};
        $self->{pgport} = $ENV{PLATFORM_TEST_PGPORT} || 5432;
        $template = $ENV{PLATFORM_TEST_TEMPLATE} || 'platform_template';

    } else {
        my $dir = "$self->{testdir}/pg";
        my $port = _free_port();

        local $ENV{PLATFORM_PG_FAST} = 1;
        $self->_tool('pg-cluster', 'init', $dir, $port);
        $self->{cluster} = $dir;
        $self->_tool('pg-cluster', 'start', $dir);

        my $env = $self->_tool('pg-cluster', 'env', $dir);
        ($self->{pghost}) = $env =~ /^PGHOST=(.*)$/m;
        ($self->{pgport}) = $env =~ /^PGPORT=(\d+)$/m;
        die "pg-cluster env: $env\n" unless $self->{pghost};

        $template = 'platform_template';
        $self->_psql('postgres', qq{CREATE DATABASE "$template";});

        local $ENV{PGHOST} = $self->{pghost};
        local $ENV{PGPORT} = $self->{pgport};
        local $ENV{PGDATABASE} = $template;
        local $ENV{PGUSER} = 'postgres';
        $self->_tool('migrate');
    }

    my $name = "t_${$}_$self->{seq}";

    # CREATE DATABASE refuses while another session uses the template,
    # e.g. a parallel test file creating its own copy: retry briefly.
    for my $try (1 .. 50) {
        my $ok = eval {
            $self->_psql('postgres',
                         qq{DROP DATABASE IF EXISTS "$name";\n}
                         . qq{CREATE DATABASE "$name" TEMPLATE "$template";});
            1;
        };
        last if $ok;
        die $@ if $try == 50 || $@ !~ /being accessed by other users/;
        sleep 0.1 + rand 0.2;
    }

    $self->{dbname} = $name;
}

sub _tool {
    my ($self, $tool, @args) = @_;

    my $path = "$self->{root}/tools/$tool";
    die "$path not found or not executable\n" unless -x $path;

    my ($rc, $out, $err) = $self->_capture([$path, @args]);
    die "tools/$tool @args failed ($rc):\n$out$err\n" if $rc != 0;
    return $out;
}

# ---------------------------------------------------------------- checks

sub _check_logs {
    my ($self, @problems) = @_;

    my $file = "$self->{testdir}/error.log";
    my $text = _slurp($file, $self->{log_offset}) // '';
    $self->{log_offset} += length $text;

    my @bad = grep { /$BAD_LOG/ } split /\n/, $text;
    for my $re (@{$self->{ignore_log}}) {
        @bad = grep { !/$re/ } @bad;
    }

    push @problems, "error log:\n" . join("\n", @bad) if @bad;

    if (my $d = $ENV{PLATFORM_SAN_LOG_DIR}) {
        for my $f (_san_files($d)) {
            next if $self->{san_before}{$f}++;
            my $body = _tail(_slurp("$d/$f") // '', 60);
            push @problems, "sanitizer report $d/$f:\n$body";
        }
    }

    return unless @problems;

    my $tb = Test::More->builder;

    # As a test while tests may still be added; otherwise (at exit, or
    # after done_testing) as a failing exit code.
    if (!$self->{ending} && !defined $tb->has_plan) {
        Test::More::ok(0, 'no alerts, crashes or sanitizer reports');
        Test::More::diag($_) for @problems;
    } else {
        Test::More::diag("FAIL: $_") for @problems;
        push @{$self->{failures}}, @problems;
    }
}

sub _san_files {
    my ($d) = @_;
    opendir(my $dh, $d) or return ();
    my @f = grep { /^(asan|ubsan|lsan|tsan|msan)\./ } readdir $dh;
    closedir $dh;
    return @f;
}

sub _cleanup {
    my ($self) = @_;

    return if $self->{cleaned}++ || $self->{owner} != $$;
    $self->{ending} = 1;

    eval { $self->stop; 1 } or Test::More::diag("stop: $@");

    if ($self->{dbname} && !$self->{cluster}) {
        eval {
            $self->_psql('postgres',
                         qq{DROP DATABASE IF EXISTS "$self->{dbname}" }
                         . qq{WITH (FORCE);});
            1;
        } or Test::More::diag("drop database: $@");
    }

    if ($self->{cluster}) {
        eval { $self->_tool('pg-cluster', 'stop', $self->{cluster}); 1 }
            or Test::More::diag("stop cluster: $@");
    }

    if ($ENV{PLATFORM_TEST_KEEP}) {
        Test::More::diag("kept $self->{testdir}");
    } else {
        remove_tree($self->{testdir});
    }
}

END {
    my $code = $?;

    for my $t (reverse @INSTANCES) {
        next unless $t->{owner} == $$;
        $t->_cleanup;
        $code ||= 1 if @{$t->{failures}};
    }

    $? = $code;
}

# ---------------------------------------------------------------- helpers

sub _alloc_ports {
    my ($self) = @_;
    my %seen;
    for my $k (qw(port port2)) {
        my $p;
        do { $p = _free_port() } while $seen{$p}++;
        $self->{$k} = $p;
    }
}

sub _free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1)
        or die "cannot bind 127.0.0.1:0: $!\n";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _wait_port {
    my ($self, $port, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        return 1 if $s;
        return 0 unless $self->{pid} && _alive($self->{pid});
        sleep 0.05;
    }
    return 0;
}

sub _wait_workers {
    my ($self, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $self->worker_pids >= $self->{workers};
        sleep 0.05;
    }
    return 0;
}

sub _read_pid {
    my ($self, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $p = _slurp("$self->{testdir}/nginx.pid");
        return $1 if defined $p && $p =~ /^(\d+)/;
        sleep 0.05;
    }
    return undef;
}

sub _stop_pid {
    my ($pid) = @_;

    # Returns the signal that ended it.
    for my $step (['QUIT', 15], ['TERM', 5], ['KILL', 5]) {
        my ($sig, $secs) = @$step;
        kill $sig, $pid or return $sig;
        my $deadline = time + $secs;
        while (time < $deadline) {
            return $sig unless _alive($pid);
            sleep 0.05;
        }
        Test::More::diag("nginx $pid did not exit after SIG$sig");
    }
    return 'KILL';
}

sub _alive {
    my ($pid) = @_;
    my $stat = _slurp("/proc/$pid/stat") // return 0;
    return $stat !~ /\)\s+Z/;
}

# Runs a command; (exit code, stdout, stderr).  No shell.
sub _capture {
    my ($self, $cmd, %o) = @_;

    my $base = "$self->{testdir}/cmd.$$." . (++$self->{ncmd});
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$base.out" or POSIX::_exit(127);
        open STDERR, '>', "$base.err" or POSIX::_exit(127);
        exec @$cmd or do {
            print STDERR "exec $cmd->[0]: $!\n";
            POSIX::_exit(127);
        };
    }

    # Bounded: a command that hangs is killed (and reported) after the
    # timeout rather than hanging the test.
    my $deadline = time + ($o{timeout} || 120);
    my ($r, $nap) = (0, 0.002);
    while (1) {
        $r = waitpid($pid, WNOHANG);
        last if $r == $pid || ($r == -1 && $! != EINTR);
        if (time > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            unlink "$base.out", "$base.err";
            die "@$cmd: timed out after " . ($o{timeout} || 120) . " s\n";
        }
        sleep $nap;
        $nap *= 2 if $nap < 0.05;
    }
    my $rc = $? >> 8 || ($? & 127 ? 128 + ($? & 127) : 0);

    my $out = _slurp("$base.out") // '';
    my $err = _slurp("$base.err") // '';
    unlink "$base.out", "$base.err";

    return ($rc, $out, $err);
}

sub _slurp {
    my ($file, $offset) = @_;
    open(my $fh, '<', $file) or return undef;
    binmode $fh;
    seek($fh, $offset, 0) if $offset;
    local $/;
    my $c = <$fh>;
    return $c // '';
}

sub _write_file {
    my ($file, $text) = @_;
    open(my $fh, '>', $file) or die "cannot write $file: $!\n";
    binmode $fh;
    print $fh $text;
    close $fh or die "cannot write $file: $!\n";
}

sub _tail {
    my ($text, $n) = @_;
    my @l = split /\n/, $text // '';
    splice(@l, 0, @l - $n) if @l > $n;
    return join("\n", @l);
}

# ---------------------------------------------------------------- sinks
#
# Receivers for what the jobs runner sends (t/lib/smtp_sink.py, Debian's
# python3-aiosmtpd; t/lib/http_sink.py), each in its own process on
# 127.0.0.1, writing what it receives to a directory below testdir:
#
#   my $smtp = $t->smtp_sink(delay => 0.1, auth => 'user:pass',
#                            tls => 'starttls' | 'implicit');
#   my $http = $t->http_sink(secret => 'whsec...', delay => 0, tls => 1);
#   my ($crt, $key) = $t->test_certificate;   self-signed for 127.0.0.1
#                           (what tls => uses; trust $crt to verify)
#   $smtp->port, $smtp->dir
#   $smtp->messages         raw messages (CRLF), in order of arrival
#   $smtp->envelopes        [{mail_from, rcpt_tos, received, auth, tls}, ...]
#   $smtp->reply('451 4.3.0 busy'), $smtp->reply(undef)   end-of-DATA reply
#   $http->requests         [{method, path, headers => [[k, v]...], body,
#                             received, verified, status}, ...]
#   $http->status(500), $http->status(undef)
#   $x->count, $x->wait_count(N, SECONDS)   (returns the count reached)
#   $x->stop, $x->start     stop it, start it again on the same port
#
# A server speaking Stripe's wire format (t/lib/stripe_server.py): Checkout
# Sessions, refunds, a hosted payment page that sends signed webhooks:
#
#   my $stripe = $t->stripe_server(key => 'sk_test_x',
#                                  webhook_url => 'http://...',
#                                  webhook_secret => 'whsec_...');
#   $stripe->url            http://127.0.0.1:<port>
#   $stripe->requests       as http_sink's, plus {form} (flat, as sent)
#   $stripe->webhooks       [{id, type, url, body, signature, status,
#                             response, sent}, ...] the events it sent
#   $stripe->wait_webhooks(N, SECONDS)
#   $stripe->fail_next(400) the next session create answers 400
#
# Sinks are stopped when the object goes away and at exit.

sub smtp_sink {
    my ($self, %o) = @_;
    return Test::Platform::Sink->_new($self, 'smtp', %o);
}

sub http_sink {
    my ($self, %o) = @_;
    return Test::Platform::Sink->_new($self, 'http', %o);
}

sub stripe_server {
    my ($self, %o) = @_;
    my @args = ('--key', $o{key} // 'sk_test_platform',
                '--webhook-secret', $o{webhook_secret} // 'whsec_platform_test');
    push @args, '--webhook-url', $o{webhook_url} if $o{webhook_url};
    return Test::Platform::Sink->_new($self, 'stripe', port => $o{port},
                                      script => 'stripe_server.py',
                                      args => \@args);
}

sub test_certificate {
    my ($self) = @_;

    my $crt = "$self->{testdir}/test-cert.pem";
    my $key = "$self->{testdir}/test-key.pem";

    return ($crt, $key) if -f $crt && -f $key;

    my ($rc, $out, $err) = $self->_capture(
        ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
         '-keyout', $key, '-out', $crt, '-days', '2', '-subj', '/CN=127.0.0.1',
         '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
    die "openssl req failed ($rc): $out$err\n" if $rc != 0;

    return ($crt, $key);
}

# ---------------------------------------------------------------- sessions

# The platform_session value a response set; in list context also the whole
# Set-Cookie line.  Nothing when it set none.
sub session_cookie {
    my ($self, $r) = @_;
    my $h = $r->{headers}{'set-cookie'} // return;
    my @h = ref $h ? @$h : ($h);
    my ($line) = grep { /^platform_session=/ } @h or return;
    my ($v) = $line =~ /^platform_session=([^;]*)/;
    return wantarray ? ($v, $line) : $v;
}

# A string as an SQL literal.
sub sql_quote { my ($self, $s) = @_; $s =~ s/'/''/g; "'$s'" }

# The link in the newest mail job queued to EMAIL (the runner need not run).
sub mail_link {
    my ($self, $email) = @_;
    return $self->psql("SELECT payload->'vars'->>'link' FROM jobs.jobs "
                       . "WHERE kind = 'mail' AND payload->>'to' = "
                       . $self->sql_quote($email)
                       . " ORDER BY id DESC LIMIT 1");
}

# Signs EMAIL in the way a person does, through /api/auth/link and
# /api/auth/confirm wired as in conf/nginx.conf: request a link, take its
# token from the mail job, confirm.  Returns the session cookie's value.
sub sign_in {
    my ($self, $email) = @_;
    require JSON::PP;
    my $json = JSON::PP->new->canonical;

    my $r = $self->req('POST', '/api/auth/link',
                       body => $json->encode({ email => $email,
                                               consent_version => 'terms-1' }));
    die "link for $email: $r->{status} $r->{content}\n" if $r->{status} != 202;

    my ($token) = ($self->mail_link($email) // '')
        =~ m{/confirm\.html#token=([A-Za-z0-9_-]{43})$}
        or die "no link for $email\n";

    $r = $self->req('POST', '/api/auth/confirm',
                    body => $json->encode({ token => $token }));
    die "confirm for $email: $r->{status} $r->{content}\n"
        if $r->{status} != 200;

    return scalar $self->session_cookie($r);
}

# ---------------------------------------------------------------- helpers

# Calls CODE until it returns true or SECS have passed; returns its last
# value.
sub wait_for {
    my ($secs, $code, $nap) = @_;
    my $deadline = time + $secs;
    my $v;
    until (($v = $code->()) || time > $deadline) {
        sleep $nap // 0.1;
    }
    return $v;
}

# "status field" of a failed request whose error detail is "field: x"
# ("400 title"), "status -" without one.
sub field_of {
    my ($r) = @_;
    require JSON::PP;
    my $b = eval { JSON::PP->new->utf8->decode($r->{content}) } || {};
    my $d = ref $b eq 'HASH' && ref $b->{error} eq 'HASH'
            ? $b->{error}{detail} // '' : '';
    return $d =~ /^field: (\S+)/ ? "$r->{status} $1" : "$r->{status} -";
}

# The token of the confirmation link in TEXT (a mail or a link).
sub confirm_token {
    my ($text) = @_;
    my ($tok) = ($text // '') =~ m{/confirm\.html#token=([A-Za-z0-9_-]{43})};
    return $tok;
}

# For the headless-Chromium tests: skips the whole file when Chromium is
# not installed, installs t/browser's npm packages (playwright-core, from
# its package-lock.json) when a checkout lacks them although `make deps`
# installs them, and returns t/browser's path.
sub browser_dir {
    my $chromium = $ENV{PLATFORM_CHROMIUM} || '/usr/bin/chromium';
    Test::More::plan(skip_all => "$chromium not installed "
                                 . '(make deps installs it)')
        unless -x $chromium;

    my $dir = ($ENV{PLATFORM_ROOT}
               || abs_path(dirname(abs_path(__FILE__)) . '/../../..'))
              . '/t/browser';
    unless (-d "$dir/node_modules/playwright-core") {
        my $out = `cd '$dir' && npm ci --no-audit --no-fund 2>&1`;
        die "npm ci in t/browser failed:\n$out" if $?;
    }
    return $dir;
}

# POSTs each JSON body on a connection of its own, every request written
# before any answer is read (non-blocking sockets in one process: forking
# hundreds of clients takes longer than the test), bounded by 60 s.
# Returns [{status, head, content}] in the order of the bodies.
sub concurrent_posts {
    my ($self, $path, @bodies) = @_;
    my $port = $self->{port};
    my (@c, %by_fd);
    for my $body (@bodies) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => 5)
            or die "connect: $!\n";
        my $req = "POST $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n"
                  . "Content-Type: application/json\r\n"
                  . 'Content-Length: ' . length($body) . "\r\n"
                  . "Connection: close\r\n\r\n$body";
        push @c, { sock => $s, out => $req, in => '' };
        $by_fd{fileno $s} = $c[-1];
    }
    for my $c (@c) {                      # small requests: one write each
        my $n = syswrite($c->{sock}, $c->{out});
        die "write: $!\n" unless defined $n && $n == length $c->{out};
    }
    require IO::Select;
    my $sel = IO::Select->new(map { $_->{sock} } @c);
    my $deadline = time + 60;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read(1)) {
            my $c = $by_fd{fileno $s};
            my $n = sysread($s, my $buf, 65536);
            if ($n) {
                $c->{in} .= $buf;
            } else {
                $sel->remove($s);
                close $s;
            }
        }
    }
    return map {
        my ($head, $body) = split /\r\n\r\n/, $_->{in}, 2;
        my ($st) = ($head // '') =~ m{^HTTP/1\.[01] (\d{3})};
        { status => $st // 599, head => $head // '', content => $body // '' }
    } @c;
}

package Test::Platform::Sink;

use File::Temp ();
use IO::Socket::INET ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

my @SINKS;

sub _new {
    my ($class, $t, $kind, %o) = @_;

    my $self = bless {
        kind  => $kind,
        owner => $$,
        port  => $o{port} || Test::Platform::_free_port(),
        dir   => File::Temp::tempdir("$kind-sink-XXXXXX",
                                     DIR => $t->testdir),
        script => $t->root . '/t/lib/' . ($o{script} || "${kind}_sink.py"),
        args  => [@{$o{args} || []}],
    }, $class;

    push @{$self->{args}}, '--delay', $o{delay} if $o{delay};
    push @{$self->{args}}, '--auth', $o{auth} if defined $o{auth};
    push @{$self->{args}}, '--secret', $o{secret} if defined $o{secret};

    if ($o{tls}) {
        my ($crt, $key) = $t->test_certificate;
        push @{$self->{args}}, '--tls-cert', $crt, '--tls-key', $key;
        push @{$self->{args}}, '--tls', $o{tls} if $kind eq 'smtp';
    }

    push @SINKS, $self;
    Scalar::Util::weaken($SINKS[-1]);

    return $self->start;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }

sub start {
    my ($self) = @_;

    die "$self->{kind} sink is running\n" if $self->{pid};

    my $log = "$self->{dir}/.log";
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
        exec '/usr/bin/python3', $self->{script}, '--port', $self->{port},
             '--dir', $self->{dir}, @{$self->{args}}
            or POSIX::_exit(127);
    }

    $self->{pid} = $pid;

    my $deadline = Time::HiRes::time() + 10;
    while (Time::HiRes::time() < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{port},
                                      Proto => 'tcp');
        if ($s) {
            close $s;
            return $self;
        }
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $self->{pid};
            last;
        }
        Time::HiRes::sleep(0.05);
    }

    my $out = Test::Platform::_slurp($log) // '';
    $self->stop;
    die "$self->{kind} sink did not start on port $self->{port}:\n$out\n";
}

sub stop {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return $self;
    return $self if $self->{owner} != $$;

    kill 'TERM', $pid;
    my $deadline = Time::HiRes::time() + 5;
    while (Time::HiRes::time() < $deadline) {
        return $self if waitpid($pid, POSIX::WNOHANG()) == $pid;
        Time::HiRes::sleep(0.02);
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return $self;
}

sub _files {
    my ($self, $ext) = @_;
    opendir(my $dh, $self->{dir}) or return ();
    my @f = sort grep { /^\d+-\d+\.\Q$ext\E$/ } readdir $dh;
    closedir $dh;
    return map { "$self->{dir}/$_" } @f;
}

sub _json {
    my ($file) = @_;
    require JSON::PP;
    return JSON::PP->new->utf8->decode(Test::Platform::_slurp($file));
}

sub count { scalar(my @f = $_[0]->_files('json')) }

sub wait_count {
    my ($self, $n, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 10);
    my $c;
    while (($c = $self->count) < $n && Time::HiRes::time() < $deadline) {
        Time::HiRes::sleep(0.05);
    }
    return $c;
}

sub messages {
    my ($self) = @_;
    return map { Test::Platform::_slurp($_) } $self->_files('eml');
}

sub envelopes {
    my ($self) = @_;
    return map { _json($_) } $self->_files('json');
}

sub requests {
    my ($self) = @_;
    return map { _json($_) } $self->_files('json');
}

sub _control {
    my ($self, $name, $value) = @_;
    my $f = "$self->{dir}/$name";
    if (defined $value) {
        Test::Platform::_write_file("$f.tmp", "$value\n");
        rename "$f.tmp", $f or die "rename $f: $!\n";
    } else {
        unlink $f;
    }
    return $self;
}

sub reply  { $_[0]->_control('.reply', $_[1]) }
sub status { $_[0]->_control('.status', $_[1]) }

# smtp_sink: the mails received for ADDRESS as [{subject, text}], text the
# base64 parts decoded (the runner sends base64, see sql/004_jobs.sql).
sub mails_to {
    my ($self, $address) = @_;
    require MIME::Base64;
    my @out;
    for my $msg ($self->messages) {
        next unless $msg =~ /^To: \Q$address\E\r$/mi;
        my ($subject) = $msg =~ /^Subject: (.*?)\r$/m;
        my $text = '';
        while ($msg =~ /\r\n\r\n([A-Za-z0-9+\/=\r\n]{40,}?)(?:\r\n--|\z)/g) {
            $text .= MIME::Base64::decode_base64($1) . "\n";
        }
        push @out, { subject => $subject, text => $text };
    }
    return @out;
}

# smtp_sink: the first mail to ADDRESS whose subject matches RE, waiting
# up to SECS (20) for it.
sub wait_mail {
    my ($self, $address, $subject_re, $secs) = @_;
    my $m;
    Test::Platform::wait_for($secs // 20, sub {
        ($m) = grep { ($_->{subject} // '') =~ $subject_re }
               $self->mails_to($address);
        $m;
    });
    return $m;
}

# stripe_server
sub url { "http://127.0.0.1:$_[0]{port}" }
sub fail_next { $_[0]->_control('.fail_next', $_[1]) }

sub webhooks {
    my ($self) = @_;
    my $d = "$self->{dir}/webhooks";
    opendir(my $dh, $d) or return ();
    my @f = sort grep { /^\d+-\d+\.json$/ } readdir $dh;
    closedir $dh;
    return map { _json("$d/$_") } @f;
}

sub wait_webhooks {
    my ($self, $n, $secs) = @_;
    my $deadline = Time::HiRes::time() + ($secs // 10);
    my $c;
    while (($c = scalar(my @w = $self->webhooks)) < $n
           && Time::HiRes::time() < $deadline) {
        Time::HiRes::sleep(0.05);
    }
    return $c;
}

sub DESTROY { local ($., $@, $!, $^E, $?); $_[0]->stop }

END {
    local $?;
    $_ && $_->stop for @SINKS;
}

package Test::Platform;

1;
