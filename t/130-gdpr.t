#!/usr/bin/perl

# GDPR requests end to end (issue 9 item 6; sql/025_gdpr.sql,
# conf/api/gdpr.conf, docs/gdpr.md): a person asks for a copy of their
# data, confirms by the mailed link (through /api/auth/confirm), the jobs
# runner builds the export and mails a download link, the file downloads
# until it expires (410 after); then a deletion: confirmed the same way,
# processed by the runner, the person's cookies (the old one and the one
# the confirmation gave) refused within the epoch poll, chat and
# engagement gone, the submission kept under the anonymous id; an unknown
# address gets the same answer; the audit for platform admins.

use strict;
use warnings;

use JSON::PP;
use MIME::Base64 qw(decode_base64);
use Test::More;
use Time::HiRes qw(time sleep);
use Test::Platform;

my $t = Test::Platform->new(workers => 2);
$t->key_file;

my $smtp = $t->smtp_sink;
my $smtp_port = $smtp->port;

(my $conf = <<"EOF") =~ s/%%SMTP%%/$smtp_port/g;
    platform_pg main { server "%%CONNINFO%%"; pool_size 2; }

    platform_session_key %%TESTDIR%%/session.key;
    platform_session_secure off;
    platform_session_epoch_poll 1s;

    platform_jobs main;
    platform_jobs_interval 100ms;
    platform_smtp_url smtp://127.0.0.1:%%SMTP%%;
    platform_smtp_from noreply\@example.org;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;

        @{[ $t->api_conf(qw(auth gdpr)) ]}
    }
EOF

$t->http_conf($conf);
$t->run;

my $json = JSON::PP->new->utf8->canonical;
my $origin = 'http://127.0.0.1:' . $t->port;

# --------------------------------------------------------------- helpers

# The decoded text of the newest mail sent to ADDRESS whose text matches
# RE (waits up to 20 s for one).
sub mail_text {
    my ($address, $re) = @_;
    my $deadline = time + 20;
    while (time < $deadline) {
        my @env = $smtp->envelopes;
        my @msg = $smtp->messages;
        for my $i (reverse 0 .. $#msg) {
            next unless grep { $_ eq $address } @{$env[$i]{rcpt_tos}};
            my $text = '';
            while ($msg[$i] =~ /\r\n\r\n([A-Za-z0-9+\/=\r\n]{40,}?)(?:\r\n--|\z)/g) {
                $text .= decode_base64($1) . "\n";
            }
            return $text if $text =~ $re;
        }
        sleep 0.2;
    }
    return '';
}

sub me { $t->get('/api/me', headers => { Cookie => "platform_session=$_[0]" }) }

sub request {
    my ($email, $kind) = @_;
    return $t->req('POST', '/api/gdpr/requests',
                   body => $json->encode({ email => $email, kind => $kind }));
}

sub confirm {
    my ($email, $what) = @_;
    my $text = mail_text($email, qr/asked for \Q$what\E/);
    like($text, qr/To confirm it is you/, "confirmation mail ($what)");
    my ($token) = $text =~ m{\Q$origin\E/confirm\.html#token=([A-Za-z0-9_-]{43})};
    ok($token, 'it carries the link') or return;
    my $r = $t->req('POST', '/api/auth/confirm',
                    body => $json->encode({ token => $token }));
    is($r->{status}, 200, 'the link is confirmed');
    return $r;
}

# ----------------------------------------------------------------- data

my $pia = $t->sign_in('pia@example.org');
ok($pia, 'Pia is signed in');
is(me($pia)->{status}, 200, 'her cookie works');

my ($uid, $ev, $sub) = split /\|/, $t->psql(<<'SQL');
WITH o AS (INSERT INTO app.organisations (name) VALUES ('Org') RETURNING id),
     e AS (INSERT INTO app.events (organisation_id, title, business_type,
                                   starts_at, ends_at)
           SELECT id, 'Hack', 'hackathon', now() - interval '1 hour',
                  now() + interval '1 hour' FROM o RETURNING id),
     tm AS (INSERT INTO app.teams (event_id, number, name)
            SELECT id, 1, 'One' FROM e RETURNING id, event_id),
     u AS (SELECT id FROM auth.users WHERE email = 'pia@example.org'),
     m AS (INSERT INTO app.team_members (team_id, event_id, user_id)
           SELECT tm.id, tm.event_id, u.id FROM tm, u),
     c AS (INSERT INTO app.chat_messages (event_id, room, id, user_id,
                                          sender_name, text)
           SELECT e.id, 'main', 1, u.id, 'Pia', 'hello, "world"' FROM e, u),
     g AS (INSERT INTO app.engagement_minutes (event_id, user_id, minute)
           SELECT e.id, u.id, date_trunc('minute', now()) FROM e, u),
     s AS (INSERT INTO app.submissions (team_id, event_id, title, link,
                                        submitted_by)
           SELECT tm.id, tm.event_id, 'Work', 'https://x.org', u.id
           FROM tm, u RETURNING id)
SELECT u.id || '|' || e.id || '|' || s.id FROM u, e, s;
SQL
ok($uid && $sub, 'her chat message, engagement, team and submission');

# ----------------------------------------------------------------- export

my $r = request('pia@example.org', 'export');
is($r->{status}, 202, 'export requested: 202');
my $known = $r->{content};
$r = request('nobody@example.org', 'delete');
is($r->{status}, 202, 'a deletion for an unknown address: 202');
is($r->{content}, $known, 'the same answer as for a known one');

$r = request('pia@example.org', 'everything');
is($r->{status}, 400, 'a bad kind: 400');
like($r->{content}, qr/"field: kind"/, 'naming the field');

$r = confirm('pia@example.org', 'a copy of the data');
is($t->json($r)->{return_path}, '/privacy.html?confirmed=export',
   'back to the privacy page');
my $pia2 = $t->session_cookie($r);

my $text = mail_text('pia@example.org', qr/copy of the data we hold about you is ready/);
my ($etok) = $text =~ m{\Q$origin\E/privacy\.html#export=([A-Za-z0-9_-]{43})};
ok($etok, 'the export link is mailed') or diag($text);

$r = $t->req('POST', '/api/gdpr/export', body => qq{{"token":"$etok"}});
is($r->{status}, 200, 'the export downloads');
like($r->{headers}{'content-disposition'} // '', qr/attachment; filename="my-data.json"/,
     'as a file');
my $ex = eval { $t->json($r) } // {};
is($ex->{'auth.users'}{email}, 'pia@example.org', 'export: profile');
is($ex->{'app.chat_messages'}[0]{text}, 'hello, "world"', 'export: chat');
is($ex->{'app.submissions'}[0]{title}, 'Work', 'export: submission');
is(scalar @{$ex->{'app.engagement_minutes'} // []}, 1, 'export: engagement');
ok(scalar @{$ex->{'auth.consents'} // []}, 'export: consents');
my $sections = $t->psql('SELECT count(*) FROM gdpr.registry');
is(scalar(grep { /\./ && $_ ne 'subject' } keys %$ex), $sections,
   'export: a section for every table of the registry');

$t->psql("UPDATE gdpr.exports SET expires_at = now() - interval '1 s'");
$r = $t->req('POST', '/api/gdpr/export', body => qq{{"token":"$etok"}});
is($r->{status}, 410, 'after the expiry: 410');

# ----------------------------------------------------------------- delete

is(me($pia)->{status}, 200, 'before deletion her first cookie works');
$r = request('pia@example.org', 'delete');
is($r->{status}, 202, 'deletion requested');
$r = confirm('pia@example.org', 'the deletion of your account');
my $pia3 = $t->session_cookie($r);

$text = mail_text('pia@example.org', qr/your account and the data we held/);
ok($text, 'the runner deleted and told her');

# Sessions: the epoch went up; every worker refuses the cookies within the
# poll (1 s here; 2 s by default).
my $deadline = time + 15;
my @status;
while (time < $deadline) {
    @status = map { me($_)->{status} } grep { $_ } $pia, $pia2, $pia3;
    last unless grep { $_ != 401 } @status;
    sleep 0.2;
}
is_deeply(\@status, [ (401) x @status ], 'every cookie of hers is refused');

is($t->psql("SELECT count(*) FROM app.chat_messages WHERE event_id = $ev"),
   0, 'her chat message is gone');
is($t->psql("SELECT count(*) FROM app.engagement_minutes WHERE user_id = $uid"),
   0, 'her engagement is gone');
is($t->psql("SELECT submitted_by FROM app.submissions WHERE id = $sub"),
   $uid, 'the submission keeps the anonymous contributor id');
is($t->psql("SELECT email FROM auth.users WHERE id = $uid"),
   "erased-$uid\@erased.invalid", 'the account holds no address');
is($t->psql("SELECT count(*) FROM auth.users WHERE email = 'pia\@example.org'"),
   0, 'nothing under her address');

# ----------------------------------------------------------------- audit

my $admin = $t->sign_in('admin@example.org');
$r = $t->get('/api/admin/gdpr/requests',
             headers => { Cookie => "platform_session=$admin" });
is($r->{status}, 403, 'the audit: not for anyone');

$t->psql("INSERT INTO auth.memberships (user_id, role) SELECT id, 'admin' "
         . "FROM auth.users WHERE email = 'admin\@example.org'");
$admin = $t->sign_in('admin@example.org');
$r = $t->get('/api/admin/gdpr/requests',
             headers => { Cookie => "platform_session=$admin" });
is($r->{status}, 200, 'the audit: platform admins');
my @req = @{ (eval { $t->json($r) } // {})->{requests} // [] };
is(scalar @req, 3, 'three requests');
my ($del) = grep { $_->{kind} eq 'delete' && $_->{status} eq 'completed' } @req;
ok($del && $del->{received_at} && $del->{confirmed_at} && $del->{completed_at},
   'the deletion: received, confirmed, completed');
ok($del && !defined $del->{email}, 'without the address');
my ($unk) = grep { $_->{kind} eq 'delete' && $_->{status} eq 'received' } @req;
ok($unk, 'the unconfirmed one stays received');

done_testing;
