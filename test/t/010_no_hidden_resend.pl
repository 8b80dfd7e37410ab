# 010_no_hidden_resend.pl: a request reaches the provider once per attempt the
# extension records (issue: hidden duplicates under load).
#
# libcurl resends on its own the requests of a reused connection that died
# before their answers ("Connection died, retrying a fresh connect"), although
# the provider may already have processed them: a phone showed the same
# notification twice while novu.messages said one attempt.  Here twenty APNs
# requests are multiplexed on a warm connection; the provider has received them
# and answers slowly, then sends GOAWAY (INTERNAL_ERROR, every stream may have
# been processed) and closes the connection: their answers are lost.  Every
# request the provider received must be an attempt the extension recorded.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('resend', $mocks);
NovuTest::create_integrations($node, $mocks);

my @slow = map { sprintf('%064x', 0x5100 + $_) } 1 .. 20;
my $warm = sprintf('%064x', 0x3a73);
$node->safe_psql('postgres', sprintf(<<'SQL', join(',', map { qq{"$_"} } @slow), $warm));
SELECT novu.create_workflow('ping', '[{"type": "push", "title": "Ping", "content": "hi"}]');
SELECT novu.identify('slow-' || n, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'apns', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array(t))))))
  FROM jsonb_array_elements_text('[%s]') WITH ORDINALITY a(t, n);
SELECT novu.identify('warm', '{"channels": [{"providerId": "apns", "credentials": {"deviceTokens": ["%s"]}}]}');
SQL

# a warm connection first: the twenty requests below go out on a reused one
NovuTest::query($node, q{SELECT novu.trigger('ping', '"warm"', '{}', '{}', 'warm-tx')});
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'warm-tx'}),
	'the connection is warm');

# the twenty are received and would be answered after 1.5 s; meanwhile the
# provider goes away with GOAWAY INTERNAL_ERROR
NovuTest::set_tokens($mocks, 'apns', 'slow:1500:1', @slow);
NovuTest::query($node, q{SELECT count(novu.trigger('ping', to_jsonb('slow-' || i), '{}', '{}', 'slow-tx-' || i))
    FROM generate_series(1, 20) i});
my $deadline = time() + 30;
my %seen;
while (time() < $deadline && keys %seen < 20)
{
	%seen = map { (($_->{path} // '') =~ m{/3/device/([0-9a-f]+)$}) ? ($1 => 1) : () }
	  @{ NovuTest::requests($mocks, 'apns') };
	delete $seen{$warm};
}
is(scalar keys %seen, 20, 'the provider received the twenty');
NovuTest::control($mocks, 'POST', '/disconnect?provider=apns&error=1');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 20 FROM novu.messages WHERE transaction_id LIKE 'slow-tx-%'
    AND status = 'sent'}, 60), 'every message ends sent');

# per token: the requests the provider received, and the attempts recorded
my %received;
for my $r (@{ NovuTest::requests($mocks, 'apns') })
{
	$received{$1}++ if ($r->{path} // '') =~ m{^/3/device/([0-9a-f]+)$};
}
my %attempts = map { split /\|/ } split /\n/, NovuTest::query($node,
	q{SELECT device_token || '|' || attempts FROM novu.messages WHERE transaction_id LIKE 'slow-tx-%'});
my @hidden = grep { ($received{$_} // 0) > $attempts{$_} } sort keys %attempts;
is(scalar @hidden, 0, 'no token received more requests than the attempts recorded for it')
  or diag(join("\n", map { "$_: received $received{$_}, recorded $attempts{$_}" } @hidden));
my $resent = grep { ($received{$_} // 0) >= 2 } @slow;
diag(sprintf('%d of the 20 slow tokens were received twice; attempts recorded: %s', $resent,
	join(',', map { $attempts{$_} } @slow)));
ok($resent == 0 || (grep { $attempts{$_} >= 2 } @slow) >= $resent,
	'a request sent again after the drop is a recorded attempt');
like(NovuTest::query($node, q{SELECT string_agg(DISTINCT regexp_replace(detail, ' in [0-9.]+ s', ''), ' | ')
    FROM novu.execution_details WHERE transaction_id LIKE 'slow-tx-%' AND status = 'Pending'}),
	qr/connection closed before the answer arrived/, 'a resent one is a recorded retry, and the activity log says why');

done_testing();
