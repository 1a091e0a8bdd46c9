#!/usr/bin/perl

# Participants as CSV, streamed (issue 9 item 5; platform_csv_export in
# ngx_platform_export.c, api.participants_csv in sql/026_analytics.sql):
# RFC 4180 quoting (commas, quotes, CR/LF, non-ASCII) checked by parsing
# the file with Python's csv module; 50,000 participants export with the
# right rows while the worker's memory stays flat (RSS sampled during a
# rate-limited download, so pages are read only as the client takes them);
# who may export (401, 404 for another organisation's event).

use strict;
use warnings;

use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Platform;

my $t = Test::Platform->new(workers => 1);
$t->key_file;

$t->http_conf(<<"EOF2");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth analytics)) ]}

        # Test only: a function whose second page fails.
        location = /test/failing.csv {
            platform_csv_export api.t_failing_csv(\$arg_n) rows=2;
        }
    }
EOF2

$t->psql(<<'SQL');
CREATE FUNCTION api.t_failing_csv(n int, after bigint, "rows" int)
RETURNS TABLE (chunk text, next bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF after > 0 THEN
        RAISE EXCEPTION 'page two breaks';
    END IF;
    RETURN QUERY SELECT E'a,b\r\n1,2\r\n', 1::bigint;
END
$$;
GRANT EXECUTE ON FUNCTION api.t_failing_csv(int, bigint, int) TO platform_app;
SQL

$t->run;

my $port = $t->port;
my $dir = $t->testdir;

my $org = $t->sign_in('org@example.org');
my $other = $t->sign_in('other@example.org');

my ($ev) = $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     o2 AS (INSERT INTO app.organisations (name) VALUES ('Other') RETURNING id),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', CASE WHEN u.email LIKE 'org@%'
                                          THEN o.id ELSE o2.id END
           FROM auth.users AS u, o, o2),
     e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           SELECT id, 'Big', 'hackathon', now(), now() + interval '1 day'
           FROM o RETURNING id)
SELECT id FROM e;
SQL
$org = $t->sign_in('org@example.org');      # with the roles now
$other = $t->sign_in('other@example.org');

# The awkward names, then 50,000 participants in all.
my @names = ("Comma, Carl", 'Quote "Q" Quinn', "Line\nBreak", "CR\r\nLF",
             "Zoë Ünïcødé 日本", '=1+1', ' spaced ', '"');
my $values = join(',', map { "(" . $t->sql_quote($names[$_]) . ", 'n$_\@x.org')" }
                        0 .. $#names);
$t->psql(<<"SQL");
WITH tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            VALUES ($ev, 'Seat', 100000) RETURNING id),
     u AS (INSERT INTO auth.users (display_name, email)
           SELECT * FROM (VALUES $values) AS v
           UNION ALL
           SELECT 'Person ' || n, 'p' || n || '\@x.org'
           FROM generate_series(1, 50000 - @{[ scalar @names ]}) AS n
           RETURNING id)
INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
SELECT $ev, tt.id, u.id FROM tt, u;
SQL
is($t->psql("SELECT count(*) FROM app.tickets WHERE event_id = $ev"), 50000,
   '50,000 participants');

# ----------------------------------------------------------------- access

my $r = $t->get("/api/events/$ev/participants.csv");
is($r->{status}, 401, 'signed out: 401');
$r = $t->get("/api/events/$ev/participants.csv",
             headers => { Cookie => "platform_session=$other" });
is($r->{status}, 404, 'another organisation\'s organiser: 404');
like($r->{content}, qr/"error"/, 'a JSON error');
$r = $t->get("/api/events/999999/participants.csv",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 404, 'no such event: 404');

# ------------------------------------------------------------ the export

sub rss_kb {
    my $pid = ($t->worker_pids)[0];
    open(my $fh, '<', "/proc/$pid/status") or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

# one small export first, so the worker's buffers exist before measuring
$r = $t->get("/api/events/$ev/participants.csv",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 200, 'the organiser: 200');

my $before = rss_kb();
my $file = "$dir/participants.csv";
my $hdr = "$dir/headers.txt";
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    exec('curl', '-s', '-o', $file, '-D', $hdr, '--limit-rate', '1500k',
         '-H', "Cookie: platform_session=$org",
         "http://127.0.0.1:$port/api/events/$ev/participants.csv");
    exit 127;
}
my $peak = $before;
while (waitpid($pid, POSIX::WNOHANG()) == 0) {
    my $kb = rss_kb();
    $peak = $kb if $kb > $peak;
    sleep 0.1;
}
is($? >> 8, 0, 'curl downloaded the file');

my $size = -s $file // 0;
my $growth = $peak - $before;
diag(sprintf('CSV %d bytes; worker RSS %d kB before, peak %d kB (+%d kB)',
             $size, $before, $peak, $growth));
cmp_ok($size, '>', 4_000_000, 'a file of several megabytes');
cmp_ok($growth * 1024, '<', $size / 4,
       'the worker\'s memory grows by far less than the file');

open(my $hf, '<', $hdr) or die;
my $headers = do { local $/; <$hf> };
like($headers, qr{^Content-Type: text/csv; charset=utf-8\r$}mi, 'text/csv, UTF-8');
like($headers, qr{^Content-Disposition: attachment; filename="participants.csv"\r$}mi,
     'as participants.csv');
like($headers, qr{^Transfer-Encoding: chunked\r$}mi, 'streamed (chunked)');

# Parse with Python's csv module (RFC 4180 dialect) and compare.
my $py = <<'PY';
import csv, json, sys
with open(sys.argv[1], newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f, strict=True))
print(json.dumps({"header": rows[0], "count": len(rows) - 1,
                  "widths": sorted(set(len(r) for r in rows)),
                  "names": [r[1] for r in rows[1:9]],
                  "emails": len(set(r[2] for r in rows[1:]))}))
PY
open(my $pf, '-|', 'python3', '-c', $py, $file) or die "python3: $!";
my $out = do { local $/; <$pf> };
close $pf;
my $got = eval { JSON::PP->new->utf8->decode($out) } // {};

is_deeply($got->{header},
          [qw(ticket_code name email ticket_type ticket_status team
              registered_at amount_minor currency user_id)], 'the header row');
is($got->{count}, 50000, 'every participant, once');
is($got->{emails}, 50000, 'no row twice');
is_deeply($got->{widths}, [10], 'every row has 10 fields');
my @got_names = @{$got->{names} // []};
utf8::encode($_) for @got_names;       # the names above are UTF-8 bytes
is_deeply(\@got_names, \@names,
          'commas, quotes, newlines and non-ASCII come back exactly');

# the raw quoting
open(my $cf, '<:raw', $file) or die;
my $raw = do { local $/; <$cf> };
like($raw, qr/,"Comma, Carl",/, 'a comma: quoted');
like($raw, qr/,"Quote ""Q"" Quinn",/, 'quotes doubled');
like($raw, qr/,"Line\nBreak",/, 'a newline: quoted');
like($raw, qr/\A[^\r\n]*\r\n/, 'lines end in CRLF');

# A client that goes away mid-file: the worker drops the download (no
# page read after), and keeps serving.
{
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port)
        or die "connect: $!";
    print $sock "GET /api/events/$ev/participants.csv HTTP/1.1\r\n"
              . "Host: 127.0.0.1\r\nCookie: platform_session=$org\r\n\r\n";
    my $n = sysread($sock, my $buf, 65536);
    ok($n && $buf =~ m{^HTTP/1.1 200}, 'a download starts');
    close $sock;
}
$r = $t->get("/api/events/$ev/participants.csv",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 200, 'the next download works');
ok(length($r->{content}) == $size, 'the same file again');

# The engagement scores endpoint (same conf file): sorted, paged.
my $oid = $t->psql("SELECT organisation_id FROM app.events WHERE id = $ev");
$t->psql("INSERT INTO app.engagement_minutes (event_id, user_id, minute) "
         . "SELECT $ev, user_id, date_trunc('minute', now()) - n * interval '1 minute' "
         . "FROM app.tickets, generate_series(0, 9) AS n "
         . "WHERE event_id = $ev AND id = (SELECT max(id) FROM app.tickets "
         . "WHERE event_id = $ev)");
$r = $t->get("/api/orgs/$oid/events/$ev/engagement/scores?limit=2",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 200, 'scores: 200');
my $sc = eval { $t->json($r) } // {};
is($sc->{total}, 50000, 'scores: every participant counted');
is($sc->{participants}[0]{minutes}, 10, 'scores: the engaged one first');
is(scalar @{$sc->{participants} // []}, 2, 'scores: limit');
$r = $t->get("/api/orgs/$oid/events/$ev/engagement/scores?sort=x",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 400, 'scores: a bad sort is 400');

# A page failing after the status was sent: the connection is closed
# without the final chunk, so the client knows the file is incomplete.
system('curl', '-s', '-o', "$dir/failing.csv",
       "http://127.0.0.1:$port/test/failing.csv?n=1");
is($? >> 8, 18, 'a page failing mid-file: curl reports a partial transfer');
$r = $t->get("/api/events/$ev/participants.csv",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 200, 'and the worker goes on');

# HEAD: the headers only
$r = $t->req('HEAD', "/api/events/$ev/participants.csv",
             headers => { Cookie => "platform_session=$org" });
is($r->{status}, 200, 'HEAD: 200');
is($r->{content} // '', '', 'HEAD: no body');

done_testing;
