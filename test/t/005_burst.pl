# 005_burst.pl: a fresh install, whose worker has planned its statements on an
# empty outbox (and whose tables were analyzed empty), takes a burst of
# triggers and drains it at the provider's pace.  Plans made for an empty outbox
# once fanned out such a burst in time proportional to its square: 20,000
# triggers took 161 s.  Then the workers' claim floor (src/queue/floor.c): it
# moves past a burst, never past a trigger whose transaction is still open, and
# a row with an id below it (restored with an explicit id) is still sent.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $N = 30000;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('burst', $mocks, 'novu.batch_size' => 1000);
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', <<SQL);
SELECT novu.create_workflow('burst', '[{"type": "push", "title": "Burst {{payload.n}}",
    "content": "for {{subscriber.firstName}}", "providers": ["expo"]}]');
ANALYZE novu.events, novu.deliveries, novu.subscribers, novu.device_tokens, novu.preferences,
        novu.execution_details;
INSERT INTO novu.subscribers (subscriber_id, first_name)
SELECT 'b-' || i, 'B' || i FROM generate_series(1, $N) i;
INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
SELECT 'b-' || i, ig.id FROM generate_series(1, $N) i, novu.integrations ig WHERE ig.identifier = 'expo-mock';
INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
SELECT ig.id, 'ExponentPushToken[b' || i || ']', 'b-' || i
  FROM generate_series(1, $N) i, novu.integrations ig WHERE ig.identifier = 'expo-mock';
SQL
is(NovuTest::query($node, q{SELECT relpages FROM pg_class WHERE oid = 'novu.events'::regclass}), '0',
	'the outbox statistics say it is empty');

# the worker runs for a while on the near-empty outbox first: what it plans now
# (and caches) must still be right for the burst
for my $i (1 .. 8)
{
	NovuTest::query($node, qq{SELECT novu.trigger('burst', '"b-$i"', '{"n": 0}', '{}', 'warm-$i')});
	NovuTest::wait_for($node, qq{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'warm-$i'});
}
is(NovuTest::query($node, q{SELECT count(*) FROM novu.deliveries WHERE status = 'sent'}), '8',
	'eight single triggers sent one after the other');
$node->safe_psql('postgres', 'DELETE FROM novu.deliveries');
NovuTest::reset_mocks($mocks);

my $t0 = time();
NovuTest::query($node, qq{SELECT count(novu.trigger('burst', to_jsonb('b-' || i), jsonb_build_object('n', i)))
    FROM generate_series(1, $N) i});
if (!ok(NovuTest::wait_for($node, qq{SELECT count(*) = $N FROM novu.deliveries WHERE status = 'sent'}, 25),
		"$N triggers committed at once are all sent within 25 s"))
{
	diag('outbox processed / deliveries by status / workers: ' . NovuTest::query($node, q{
	SELECT (SELECT count(*) FILTER (WHERE status = 'processed') FROM novu.events) || ' / ' ||
	       (SELECT string_agg(status || ' ' || n, ', ') FROM (SELECT status, count(*) n FROM novu.deliveries GROUP BY 1) x) || ' / ' ||
	       (SELECT string_agg(coalesce(wait_event_type || ':' || wait_event, 'running') || ' ' || state || ' ' || left(query, 50), '; ')
	          FROM pg_stat_activity WHERE backend_type = 'novu delivery worker')}) . '; load: ' . `cat /proc/loadavg`);
	my @errors = grep { /ERROR|WARNING|FATAL|PANIC/ } split /^/, PostgreSQL::Test::Utils::slurp_file($node->logfile);
	diag('server log errors and warnings: ', join('', @errors[0 .. ($#errors < 19 ? $#errors : 19)]));
}
my $elapsed = time() - $t0;
diag(sprintf('%d deliveries in %.1f s', $N, $elapsed));

is(NovuTest::query($node, q{SELECT count(*) FROM novu.events WHERE status <> 'processed'}), '0',
	'every outbox row is processed');
my $sends = NovuTest::expo_sends($mocks);
my %seen;
$seen{ $_->{to} }++ for map { @{ $_->{body} } } @$sends;
is(scalar(keys %seen), $N, 'the mock received every token');
# every request the provider received is an attempt the extension recorded: a
# retry (a timeout under load) shows as attempts 2, never as a hidden resend
my %attempts = map { split /\|/ } split /\n/, NovuTest::query($node,
	q{SELECT device_token || '|' || attempts FROM novu.deliveries});
my @unequal = grep { ($seen{$_} // 0) != ($attempts{$_} // 0) } keys %attempts;
is(scalar(@unequal), 0, 'the mock received each token as many times as attempts were recorded')
  or diag('for example: ' . join(', ', map { "$_ received " . ($seen{$_} // 0) . ", attempts $attempts{$_}" }
	  (sort @unequal)[0 .. ($#unequal < 4 ? $#unequal : 4)]));
my $retried = NovuTest::query($node, q{SELECT string_agg(n || ' x ' || d, '; ')
    FROM (SELECT detail d, count(*) n FROM novu.execution_details WHERE status = 'Pending' GROUP BY 1) x});
diag("retried: $retried") if $retried ne '';
is(scalar(grep { $_ > 1 } values %seen), 0, 'and, with no retry recorded, none twice') if $retried eq '';

# The claim floor.  The workers log it at DEBUG1 when it moves.  The
# database's transactions default to repeatable read from now on: the workers
# keep read committed (each claim sees what committed before it).
$node->safe_psql('postgres', 'ALTER ROLE novu_worker SET log_min_messages = debug1');
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET default_transaction_isolation = 'repeatable read'});
$node->restart;
my $log_at = -s $node->logfile;
# The floors the workers logged since offset $from.
sub floors
{
	my ($from) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $from);
	return ($log =~ /novu: outbox claim floor (-?\d+)/g);
}
# Each worker's last floor logged since offset $from (pid => floor).
sub last_floors
{
	my ($from) = @_;
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $from);
	my %last;
	$last{$1} = $2 while $log =~ /\[(\d+)\] DEBUG:  novu: outbox claim floor (-?\d+)/g;
	return %last;
}
# Trigger and send single notifications until $cond holds (each one sent
# before the next: the workers claim, and look at their floor, meanwhile), at
# most $seconds; whether it held.
my $single = 0;
# Set novu.poll_interval (undef: back to the cluster's) and wait until the workers have it.
sub set_poll
{
	my ($value) = @_;
	$node->safe_psql('postgres', (defined $value ? "ALTER SYSTEM SET novu.poll_interval = '$value'" : 'ALTER SYSTEM RESET novu.poll_interval')
		  . '; SELECT pg_reload_conf();');
	NovuTest::wait_old_poll_spent($node)
	  or die 'the configuration was not reloaded';
}

sub singles_until
{
	my ($cond, $seconds) = @_;
	my $deadline = time() + $seconds;
	while (time() < $deadline)
	{
		return 1 if $cond->();
		$single++;
		NovuTest::query($node, qq{SELECT novu.trigger('burst', '"b-3"', '{"n": -2}', '{}', 'single-$single')});
		NovuTest::wait_for($node, qq{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'single-$single'});
	}
	return $cond->();
}

# a transaction takes its outbox id and stays open while a burst is sent
my $late = $node->background_psql('postgres');
$late->query_safe('BEGIN');
$late->query_safe(q{SELECT novu.trigger('burst', '"b-1"', '{"n": -1}', '{}', 'late-1')});
my $late_id = $late->query_safe(q{SELECT id FROM novu.events WHERE transaction_id = 'late-1'});
NovuTest::query($node, q{SELECT count(novu.trigger('burst', to_jsonb('b-' || i), jsonb_build_object('n', i), '{}', 'second-' || i))
    FROM generate_series(1, 3000) i});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 3000 FROM novu.deliveries WHERE transaction_id LIKE 'second-%' AND status = 'sent'}, 30),
	'a second burst of 3,000 sent while a trigger\'s transaction stays open');
my $t_open = time();
singles_until(sub { time() - $t_open > 3 }, 10);
my @while_open = floors($log_at);
is(scalar(grep { $_ > $late_id } @while_open), 0,
	"while it is open, no worker's floor passes its outbox id $late_id (floors: @while_open)");
# a 30 s poll meanwhile: a send within seconds comes from the commit's wake-up
set_poll('30s');
# (times are the server's: the client's own process starts do not count)
my $t_commit = $late->query_safe(q{SELECT clock_timestamp()});
$late->query_safe('COMMIT');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'late-1'}, 10),
	'the late commit is sent');
my $late_after = NovuTest::query($node, qq{SELECT extract(epoch FROM sent_at - '$t_commit'::timestamptz)
    FROM novu.deliveries WHERE transaction_id = 'late-1'});
ok($late_after < 5, sprintf('at its commit\'s wake-up, not by a later scan from the start (%.3f s)', $late_after));
$late->quit;
set_poll(undef);

# once it is committed, the floors move past both bursts
my $second_max = NovuTest::query($node, q{SELECT max(id) FROM novu.events WHERE transaction_id LIKE 'second-%'});
ok(singles_until(sub { scalar grep { $_ > $second_max } floors($log_at) }, 20),
	"a worker's floor moved past the second burst (id $second_max)");

# a row below the floor, inserted with an explicit id (as a restore would), is sent all the same
$node->safe_psql('postgres', q{INSERT INTO novu.events (transaction_id, id, workflow_id, recipients, payload)
    VALUES ('restored-1', 0, 'burst', '{b-2}', '{"n": 0}')});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'restored-1'}, 30),
	'a pending row with an id below the floor (0) is sent too');

# the sequence set back (TRUNCATE ... RESTART IDENTITY): new triggers get ids below the floor
my $restored_at = -s $node->logfile;
my $last_id = NovuTest::query($node, q{SELECT max(id) FROM novu.events});
my $nworkers = NovuTest::query($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
ok(singles_until(sub { my %f = last_floors($restored_at); (grep { $_ >= $last_id - 1 } values %f) == $nworkers }, 20),
	"every worker's floor is back up (near id $last_id) before the restart of the sequence");
# (a worker reading the tables meanwhile may take their locks in the other order:
# PostgreSQL then cancels one side with "deadlock detected", and the DBA retries)
my ($truncated, $truncate_err) = (0, '');
for my $try (1 .. 10)
{
	my $rc = $node->psql('postgres', 'TRUNCATE novu.events, novu.deliveries RESTART IDENTITY CASCADE', stderr => \$truncate_err);
	if ($rc == 0) { $truncated = 1; last; }
	die "TRUNCATE failed: $truncate_err" unless $truncate_err =~ /deadlock detected/;
}
die "TRUNCATE kept deadlocking: $truncate_err" unless $truncated;
set_poll('30s');
NovuTest::query($node, q{SELECT novu.trigger('burst', '"b-4"', '{"n": -3}', '{}', 'after-restart')});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.deliveries WHERE transaction_id = 'after-restart'}, 10),
	'after TRUNCATE ... RESTART IDENTITY the next trigger (id 1) is sent');
my $restart_after = NovuTest::query($node, q{SELECT extract(epoch FROM d.sent_at - e.created_at)
    FROM novu.deliveries d JOIN novu.events e USING (transaction_id) WHERE transaction_id = 'after-restart'});
# (below the floor, it would wait for the worker to see the sequence: a poll or
# two, 30 s each here)
ok($restart_after < 5, sprintf('at its wake-up, not after the floor came down (%.3f s)', $restart_after));
set_poll(undef);

# under the database's repeatable read, a worker's claim would fail on rows the
# other worker took since its snapshot
my @serialize = grep { /could not serialize/ } split /\n/, PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_at);
is(scalar @serialize, 0, 'the workers ran at read committed: no serialization failure')
  or diag(join("\n", @serialize[0 .. ($#serialize < 4 ? $#serialize : 4)]));
done_testing();
