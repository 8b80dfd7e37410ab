# 023_backoff_order.pl: a backoff digest lets the first event of a key through
# at once and digests the next one, with two workers fanning out at the same
# moment.  Pairs of events of one key are committed back to back, many times:
# each commit wakes one worker, the next one the other, so the two events of
# a pair often go to two workers at once.
# In every pair the older event goes through and the newer one is digested,
# whichever worker took the key first; each is sent once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $pairs = 100;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('backoff_order', $mocks, 'novu.workers' => 2);
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', <<SQL);
SELECT novu.create_workflow('bursty', '[{"type": "digest", "amount": 2, "unit": "seconds", "digestKey": "postId",
                                         "backoff": true, "backoffAmount": 30, "backoffUnit": "seconds"},
    {"type": "push", "title": "{% if step.digest %}{{step.total_count}} digested{% else %}at once{% endif %}",
     "content": "{{payload.n}}"}]');
SELECT count(novu.identify('b' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object('providerId', 'fcm',
           'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-b' || i)))))))
  FROM generate_series(1, $pairs) i;
SQL

# both workers are up before the first commit
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 30),
	'two delivery workers run');

# each pair: the older event "a", then "b", same subscriber and key, each
# committed on its own, back to back (each commit wakes one worker, the next
# commit the other)
my $script = join('', map {
	"SELECT novu.trigger('bursty', '\"b$_\"', '{\"n\": \"a\", \"postId\": 7}', '{}', 'p$_-a');\n"
	  . "SELECT novu.trigger('bursty', '\"b$_\"', '{\"n\": \"b\", \"postId\": 7}', '{}', 'p$_-b');\n"
} 1 .. $pairs);
$node->safe_psql('postgres', $script);

ok(NovuTest::wait_for($node, "SELECT count(*) = 2 * $pairs FROM novu.messages WHERE transaction_id LIKE 'p%' AND status = 'sent'", 60),
	'every pair: one message at once and one digest, sent');

# which event of each pair went through at once (its digest row done, not a window)
my $through = $node->safe_psql('postgres', q{
	SELECT string_agg(r.transaction_id, ' ' ORDER BY r.subscriber_id)
	  FROM novu.step_runs r
	 WHERE r.workflow_id = 'bursty' AND r.kind = 'digest'
	   AND EXISTS (SELECT FROM novu.execution_details d WHERE d.transaction_id = r.transaction_id
	                  AND d.detail LIKE 'Digest skipped: no event in the backoff window%')});
my @wrong = grep { !/-a$/ } split / /, $through;
is(scalar(split / /, $through), $pairs, 'one event of each pair went through at once');
is(scalar @wrong, 0, 'in every pair it was the older one') or diag("the newer went first: @wrong");

# the mock: per subscriber, "at once" for a, then one digest of b
my %titles;
for my $r (@{ NovuTest::requests($mocks, 'fcm') })
{
	my $m = $r->{body}{message};
	push @{ $titles{ $m->{token} } }, "$m->{notification}{title}:$m->{notification}{body}";
}
my @bad = grep { join(',', @{ $titles{"fcm-b$_"} // [] }) ne 'at once:a,1 digested:b' } 1 .. $pairs;
is(scalar @bad, 0, 'FCM got, per subscriber, the older at once and then the newer digested, once each')
  or diag(join('; ', map { "b$_: " . join(',', @{ $titles{"fcm-b$_"} // [] }) } @bad[0 .. ($#bad < 4 ? $#bad : 4)]));

# how often the workers raced for a pair: the newer event set aside until the
# older one had gone through
my $set_aside = $node->safe_psql('postgres', q{SELECT count(*) FROM novu.events WHERE workflow_id = 'bursty' AND retry_at IS NOT NULL AND transaction_id LIKE '%-b'});
note("pairs whose newer event was set aside behind the older one: $set_aside of $pairs");

$node->stop;
done_testing();
