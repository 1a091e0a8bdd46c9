package Test::Platform::HLS;

# Shared set-up of the HLS tests (t/90-hls-ingest.t, t/91-hls-serve.t,
# t/92-hls-record.t, t/58-browser-video.t): nginx with conf/api/hls.conf, an
# event with an organiser, a ticket holder and an outsider signed in, the
# ingest key, and ffmpeg pushing a test source.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(hls_setup ffmpeg_push wait_until slurp);

my $json = JSON::PP->new->canonical;

# hls_setup($t, %o): writes the configuration (extra => http-level lines,
# server => server-level lines), starts nginx, signs people in, makes the
# event.  Returns {ev, org, key, cookie => {org, p1, out}, store}.
sub hls_setup {
    my ($t, %o) = @_;
    my $dir = $t->testdir;

    $t->key_file;
    $t->key_file('hls.key');

    my $extra = $o{extra} // '';
    my $server = $o{server} // '';

    $t->http_conf(<<"CONF");
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key $dir/session.key;
    platform_session_secure off;

    platform_hls_store     %%TESTDIR%%/hls;
    platform_hls_sign_key  $dir/hls.key;
    platform_hls_cache_ttl 1s;
    platform_hls_sweep     250ms;
$extra

    server {
        listen 127.0.0.1:%%PORT%%;

        @{[ $t->api_conf(qw(auth events hls)) ]}
$server
    }
CONF
    $t->run;

    my %cookie = map { $_ => $t->sign_in("$_\@example.org") } qw(org p1 out);

    my ($org, $ev) = split /\|/, $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (title, business_type, starts_at, ends_at,
                                   organisation_id, status)
           SELECT 'Live Night', 'conference', '2031-03-10T09:00:00Z',
                  '2031-03-11T17:00:00Z', o.id, 'published' FROM o
           RETURNING id),
     tt AS (INSERT INTO app.ticket_types (event_id, name, quantity)
            SELECT e.id, 'Seat', 100 FROM e RETURNING id, event_id),
     m AS (INSERT INTO auth.memberships (user_id, role, org_id)
           SELECT u.id, 'organiser', o.id FROM auth.users u, o
           WHERE u.email = 'org@example.org'),
     tk AS (INSERT INTO app.tickets (event_id, ticket_type_id, user_id)
            SELECT tt.event_id, tt.id, u.id FROM tt, auth.users u
            WHERE u.email = 'p1@example.org')
SELECT o.id || '|' || e.id FROM o, e;
SQL

    # The organiser signed in before the organisation existed: again, so
    # the cookie names the role.
    $cookie{org} = $t->sign_in('org@example.org');

    my $r = $t->req('GET', "/api/orgs/$org/events/$ev/stream",
                    headers => { Cookie => "platform_session=$cookie{org}" });
    die "stream of $ev: $r->{status} $r->{content}\n" if $r->{status} != 200;

    return { ev => $ev, org => $org, cookie => \%cookie,
             key => $json->decode($r->{content})->{ingest_key},
             store => "$dir/hls" };
}

# ffmpeg_push($t, $ev, $key, seconds => 6, flags => 'delete_segments',
#             vp9 => 0, log => FILE): pushes a test source in the
# background; returns the pid.
sub ffmpeg_push {
    my ($t, $ev, $key, %o) = @_;

    my $secs = $o{seconds} // 6;
    my @video = $o{vp9}
        ? (qw(-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 300k),
           qw(-hls_segment_type fmp4))
        : (qw(-c:v libx264 -preset ultrafast -tune zerolatency -pix_fmt
              yuv420p));
    my @cmd = ('ffmpeg', qw(-nostdin -hide_banner -loglevel error -re),
               qw(-f lavfi -i testsrc=size=320x240:rate=25),
               qw(-f lavfi -i sine=frequency=440:sample_rate=44100),
               '-t', $secs, @video, qw(-g 25 -c:a aac -b:a 64k),
               qw(-f hls -hls_time 1 -hls_list_size 4),
               '-hls_flags', $o{flags} // 'delete_segments',
               qw(-method PUT),
               '-headers', "Authorization: Bearer $key\r\n",
               'http://127.0.0.1:' . $t->port . "/live/$ev/index.m3u8");

    my $log = $o{log} // $t->testdir . '/ffmpeg.log';
    my $pid = fork // die "fork: $!\n";

    if ($pid == 0) {
        open(STDOUT, '>>', $log) or POSIX::_exit(127);
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
        exec(@cmd) or POSIX::_exit(127);
    }

    return $pid;
}

# Polls CODE every 100 ms until true or DEADLINE seconds; returns its value.
sub wait_until {
    my ($code, $deadline) = @_;
    my $end = time + ($deadline // 30);

    while (1) {
        my $v = $code->();
        return $v if $v;
        return $v if time > $end;
        sleep 0.1;
    }
}

sub slurp {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return undef;
    local $/;
    return scalar <$fh>;
}

1;
