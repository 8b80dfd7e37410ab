# 005_burst.pl: a fresh install, whose worker has planned its statements on an
# empty outbox (and whose tables were analyzed empty), takes a burst of
# triggers and drains it at the provider's pace.  Plans made for an empty outbox
# once fanned out such a burst in time proportional to its square: 20,000
# triggers took 161 s.
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

done_testing();
