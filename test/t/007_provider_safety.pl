# 007_provider_safety.pl: attacks on device tokens and their pruning, end to end
# with two delivery workers and the strict mocks (DESIGN.md 5, PROTOCOLS.md 7).
#
# 1. An FCM 404 without the UNREGISTERED code (a wrong endpoint's 404, or
#    NOT_FOUND without FcmError) is not a dead token: nothing is pruned.
# 2. An integration whose every answer is a dead-token code, handled by two
#    workers: nothing is pruned, whether it never delivered (fresh) or had
#    delivered before (the breaker counts across workers), and a WARNING says so.
# 3. Rows stored by an older version: overrides that retarget (fcm.token,
#    expo.to) or inject headers (CR/LF, apns-topic) and device tokens of the
#    wrong form (an APNs "../x?y", an invalid Expo token in a batch) fail alone,
#    with their reason, while the others are delivered; nothing reaches the
#    mocks for them.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('safety', $mocks, 'novu.workers' => 2);
NovuTest::create_integrations($node, $mocks);
my $json = JSON::PP->new->canonical;

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }
sub server_log { return PostgreSQL::Test::Utils::slurp_file($node->logfile); }
sub hex_token { my ($label) = @_; my $h = unpack('H*', $label); return substr($h . ('0' x 64), 0, 64); }

# identify($sub, [providerId, integration, [tokens]], ...)
sub identify
{
	my ($sub, @channels) = @_;
	my $profile = { channels => [ map { +{ providerId => $_->[0], integrationIdentifier => $_->[1],
					credentials => { deviceTokens => $_->[2] } } } @channels ] };
	q1('SELECT novu.identify(' . lit($sub) . ', ' . lit($json->encode($profile)) . '::jsonb)');
}

# One trigger (its own transaction) per subscriber: the commits wake the workers in turn.
sub trigger_each
{
	my ($tx, @subs) = @_;
	$node->safe_psql('postgres', join('', map {
		"SELECT novu.trigger('safety', " . lit($json->encode($_)) . "::jsonb, '{\"n\": 1}', '{}', " . lit("$tx-$_") . ");\n" } @subs));
}

sub msg
{
	my ($tx_like, $token) = @_;
	my $r = q1('SELECT row_to_json(m) FROM novu.messages m WHERE transaction_id LIKE ' . lit($tx_like)
		  . ' AND device_token = ' . lit($token) . ' ORDER BY id LIMIT 1');
	return $r eq '' ? {} : NovuTest::decode($r);
}

sub wait_done
{
	my ($like, $count, $timeout) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . " FROM novu.messages WHERE transaction_id LIKE " . lit($like), $timeout // 20);
}

# Triggers the subscribers' messages in rounds until at least two workers have
# recorded dead-token answers for the integration (which worker claims a commit is
# up to the scheduler, so one round may land on one worker); returns the rounds.
sub trigger_until_both_workers
{
	my ($tx, $ident, @subs) = @_;
	my $rounds = 0;
	while ($rounds < 8)
	{
		$rounds++;
		trigger_each("$tx$rounds", @subs);
		wait_done("$tx$rounds-%", scalar(@subs), 30) or last;
		last if q1(q{SELECT count(DISTINCT s.worker) FROM novu.provider_stats s JOIN novu.integrations i ON i.id = s.integration_id
		    WHERE i.identifier = } . lit($ident) . q{ AND s.failed > 0}) >= 2;
	}
	return $rounds;
}

sub stored_tokens
{
	my ($ident, $like) = @_;
	return q1('SELECT count(*) FROM novu.device_tokens t JOIN novu.integrations i ON i.id = t.integration_id'
		  . ' WHERE i.identifier = ' . lit($ident) . ' AND t.device_token LIKE ' . lit($like));
}

sub pruned { return q1('SELECT tokens_pruned FROM novu.stat_providers WHERE integration_identifier = ' . lit($_[0])); }

# FCM requests whose message went to a token
sub fcm_requests_for
{
	my ($token) = @_;
	return [ grep { ($_->{body}{message}{token} // '') eq $token } @{ NovuTest::requests($mocks, 'fcm') } ];
}

my $sa = slurp_file("$mocks->{dir}/fcm-service-account.json");
# fcm-wrongendpoint points at another service (the Expo mock), which answers 404 to the FCM path
$node->safe_psql('postgres', sprintf(<<'SQL', $sa, $mocks->{urls}{expo}, $sa, $mocks->{urls}{fcm}, $sa, $mocks->{urls}{fcm}));
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb, 'endpoint', '%s'), 'fcm-wrongendpoint');
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb, 'endpoint', '%s'), 'fcm-fresh');
SELECT novu.create_integration('fcm', jsonb_build_object('serviceAccount', $sa$%s$sa$::jsonb, 'endpoint', '%s'), 'fcm-turned');
SELECT novu.create_workflow('safety', '[{"type": "push", "title": "T {{payload.n}}", "content": "C"}]');
SQL

# ===========================================================================
# 1. A bare FCM 404 is not a dead token
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	# a trusted integration first delivers, then answers one token with NOT_FOUND and no FcmError;
	# a real UNREGISTERED on the same integration still prunes
	NovuTest::set_tokens($mocks, 'fcm', 'fail:404:::bare', 'fcm-bare-json');
	NovuTest::set_tokens($mocks, 'fcm', 'dead', 'fcm-really-dead');
	identify('bare-ok', [ 'fcm', 'fcm-mock', ['fcm-bare-ok'] ]);
	identify('bare-json', [ 'fcm', 'fcm-mock', ['fcm-bare-json'] ]);
	identify('bare-dead', [ 'fcm', 'fcm-mock', ['fcm-really-dead'] ]);
	identify('bare-other', [ 'fcm', 'fcm-wrongendpoint', ['fcm-bare-other'] ]);
	trigger_each('tx-bare0', 'bare-ok');
	ok(wait_done('tx-bare0-%', 1), 'bare 404: the integration delivered a first message');
	trigger_each('tx-bare', 'bare-json', 'bare-dead', 'bare-other');
	ok(wait_done('tx-bare-%', 3), 'bare 404: the messages are final');

	my $m = msg('tx-bare-%', 'fcm-bare-json');
	my $r = fcm_requests_for('fcm-bare-json');
	is(join(',', map { $_->{response}{status} } @$r), '404', 'NOT_FOUND without FcmError: the mock answered 404 once');
	ok(!defined $r->[0]{response}{body}{error}{details}, 'NOT_FOUND without FcmError: no FcmError detail in the answer');
	is($m->{status}, 'failed', 'NOT_FOUND without FcmError: the message failed');
	like($m->{last_error} // '', qr/^NOT_FOUND\b/, 'NOT_FOUND without FcmError: last_error says NOT_FOUND');
	is(stored_tokens('fcm-mock', 'fcm-bare-json'), '1', 'NOT_FOUND without FcmError: the token is kept');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'tx-bare-%' AND detail ~ '^Token removed: NOT_FOUND'}),
		'0', 'NOT_FOUND without FcmError: no "Token removed" activity');

	$m = msg('tx-bare-%', 'fcm-bare-other');
	my @other = grep { $_->{path} =~ m{^/v1/projects/} } @{ NovuTest::requests($mocks, 'expo') };
	is(join(',', map { $_->{response}{status} } @other), '404', 'wrong endpoint: the other service answered 404 once');
	is($m->{status}, 'failed', 'wrong endpoint: the message failed');
	like($m->{last_error} // '', qr/^HTTP 404/, 'wrong endpoint: last_error says HTTP 404');
	is(stored_tokens('fcm-wrongendpoint', 'fcm-bare-other'), '1', 'wrong endpoint: the token is kept');
	is(pruned('fcm-wrongendpoint'), '0', 'wrong endpoint: stat_providers counts no pruned token');
	like(q1(q{SELECT string_agg(detail, '|') FROM novu.execution_details WHERE transaction_id = 'tx-bare-bare-other'}),
		qr/Integration configuration error: HTTP 404/, 'wrong endpoint: reported as a configuration error');

	$m = msg('tx-bare-%', 'fcm-really-dead');
	like($m->{last_error} // '', qr/^UNREGISTERED\b/, 'UNREGISTERED: the explicit code');
	is(stored_tokens('fcm-mock', 'fcm-really-dead'), '0', 'UNREGISTERED: the token is pruned');
}

# ===========================================================================
# 2. Every answer a dead-token code, across two workers: nothing is pruned
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my @fresh = map { "fr-$_" } 1 .. 12;
	NovuTest::set_tokens($mocks, 'fcm', 'dead', map { "fcm-$_" } @fresh);
	$node->safe_psql('postgres', q{SELECT count(novu.identify('fr-' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
	    'providerId', 'fcm', 'integrationIdentifier', 'fcm-fresh', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-fr-' || i)))))))
	  FROM generate_series(1, 12) i});
	my $log_offset = length(server_log());
	my $rounds = trigger_until_both_workers('tx-fresh-r', 'fcm-fresh', @fresh);
	my $n = 12 * $rounds;
	ok(wait_done('tx-fresh-r%', $n, 30), "fresh integration: the $n messages ($rounds round(s) of 12) are final");
	my $r = [ grep { ($_->{token} // '') =~ /^fcm-fr-/ } @{ NovuTest::requests($mocks, 'fcm') } ];
	is(scalar(grep { $_->{response}{status} == 404 && ($_->{response}{body}{error}{details}[0]{errorCode} // '') eq 'UNREGISTERED' } @$r),
		$n, "fresh integration: the mock answered 404 UNREGISTERED to all $n");
	cmp_ok(q1(q{SELECT count(DISTINCT s.worker) FROM novu.provider_stats s JOIN novu.integrations i ON i.id = s.integration_id
	    WHERE i.identifier = 'fcm-fresh' AND s.failed > 0}), '>=', 2, 'fresh integration: both workers got dead-token answers');
	is(stored_tokens('fcm-fresh', 'fcm-fr-%'), '12', 'fresh integration: none of the 12 tokens is deleted');
	is(pruned('fcm-fresh'), '0', 'fresh integration: stat_providers counts no pruned token');
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id LIKE 'tx-fresh-r%' AND status = 'failed'
	    AND last_error ~ '^UNREGISTERED' AND last_error ~* 'pruning suspended'}), $n,
		'fresh integration: each message failed, its reason says UNREGISTERED and that pruning is suspended');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'tx-fresh-r%' AND detail ~ '^Token removed'}), '0',
		'fresh integration: no "Token removed" activity');
	like(substr(server_log(), $log_offset), qr/WARNING:\s+novu: integration "fcm-fresh"[^\n]*(token pruning is suspended|the tokens are kept)/,
		'fresh integration: a WARNING says the tokens are kept');

	# an integration that worked, then answers every token dead (wrong project behind a proxy, ...)
	NovuTest::reset_mocks($mocks);
	identify('tr-ok', [ 'fcm', 'fcm-turned', ['fcm-tr-ok'] ]);
	trigger_each('tx-turned0', 'tr-ok');
	ok(wait_done('tx-turned0-%', 1), 'turned integration: delivered a first message');
	is(msg('tx-turned0-%', 'fcm-tr-ok')->{status}, 'sent', 'turned integration: it was sent');
	my @turned = map { "tr-$_" } 1 .. 8;
	NovuTest::set_tokens($mocks, 'fcm', 'dead', map { "fcm-$_" } @turned);
	$node->safe_psql('postgres', q{SELECT count(novu.identify('tr-' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
	    'providerId', 'fcm', 'integrationIdentifier', 'fcm-turned', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-tr-' || i)))))))
	  FROM generate_series(1, 8) i});
	$log_offset = length(server_log());
	$rounds = trigger_until_both_workers('tx-turned-r', 'fcm-turned', @turned);
	$n = 8 * $rounds;
	ok(wait_done('tx-turned-r%', $n, 30), "turned integration: the $n messages ($rounds round(s) of 8) are final");
	cmp_ok(q1(q{SELECT count(DISTINCT s.worker) FROM novu.provider_stats s JOIN novu.integrations i ON i.id = s.integration_id
	    WHERE i.identifier = 'fcm-turned' AND s.failed > 0}), '>=', 2, 'turned integration: both workers got dead-token answers');
	is(stored_tokens('fcm-turned', 'fcm-tr-%'), '9', 'turned integration: none of its tokens is deleted');
	is(pruned('fcm-turned'), '0', 'turned integration: stat_providers counts no pruned token');
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id LIKE 'tx-turned-r%' AND status = 'failed'
	    AND last_error ~* 'pruning suspended'}), $n, 'turned integration: each reason says pruning is suspended');
	like(substr(server_log(), $log_offset),
		qr/WARNING:\s+novu: integration "fcm-turned": \d+ of \d+ answers in the last minute reported the device token dead; token pruning is suspended/,
		'turned integration: the circuit breaker WARNING is logged');
}

# ===========================================================================
# 3. Rows stored by an older version fail alone
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my $apns1 = hex_token('old-apns-1');
	my $apns2 = hex_token('old-apns-2');
	# the fake target of the override is dead: answering it must not prune the real token
	NovuTest::set_tokens($mocks, 'fcm', 'dead', 'fcm-victim');
	identify('old-1', [ 'fcm', 'fcm-mock', ['fcm-old-1'] ], [ 'apns', 'apns-mock', [$apns1] ], [ 'expo', 'expo-mock', ['ExponentPushToken[old-1]'] ]);
	identify('old-2', [ 'fcm', 'fcm-mock', ['fcm-old-2'] ], [ 'apns', 'apns-mock', [$apns2] ], [ 'expo', 'expo-mock', ['ExponentPushToken[old-2]'] ]);
	# old-3 has tokens of the wrong form, stored before they were checked; old-4 shares its trigger
	identify('old-3');
	identify('old-4', [ 'expo', 'expo-mock', ['ExponentPushToken[old-4]'] ], [ 'apns', 'apns-mock', [ hex_token('old-apns-4') ] ]);
	$node->safe_psql('postgres', <<'SQL');
INSERT INTO novu.subscriber_channels (subscriber_id, integration_id)
SELECT 'old-3', id FROM novu.integrations WHERE identifier IN ('apns-mock', 'expo-mock');
INSERT INTO novu.device_tokens (integration_id, device_token, subscriber_id)
SELECT id, CASE identifier WHEN 'apns-mock' THEN '../x?y' ELSE 'not-an-expo-token' END, 'old-3'
  FROM novu.integrations WHERE identifier IN ('apns-mock', 'expo-mock');
BEGIN;
INSERT INTO novu.events (transaction_id, workflow_id, recipients, payload, overrides) VALUES
  ('tx-old-1', 'safety', '{old-1}', '{"n": 1}',
   '{"fcm": {"token": "fcm-victim"},
     "apns": {"headers": {"apns-collapse-id": "c\r\nx-injected: 1", "apns-topic": "com.attacker"}},
     "expo": {"to": "ExponentPushToken[victim]"}}'),
  ('tx-old-2', 'safety', '{old-2}', '{"n": 2}', '{}'),
  ('tx-old-3', 'safety', '{old-3,old-4}', '{"n": 3}', '{}');
COMMIT;
SQL
	ok(wait_done('tx-old-%', 10, 30), 'old rows: the 10 messages are final');

	# overrides that retarget or inject: each of old-1's messages fails with the reason
	for my $c ([ 'fcm-old-1', qr/^Override refused: overrides\.fcm\.token is not allowed/ ],
		[ $apns1, qr/^Override refused: overrides\.apns\.headers\.(apns-topic is not allowed|apns-collapse-id contains a control character)/ ],
		[ 'ExponentPushToken[old-1]', qr/^Override refused: overrides\.expo\.to is not allowed/ ])
	{
		my ($token, $reason) = @$c;
		my $m = msg('tx-old-1', $token);
		is($m->{status}, 'failed', "bad override ($token): failed");
		like($m->{last_error} // '', $reason, "bad override ($token): the reason names the field");
		is($m->{attempts}, 1, "bad override ($token): not retried");
	}
	is(scalar @{ fcm_requests_for('fcm-victim') }, 0, 'overrides.fcm.token: no request went to the fake target');
	is(scalar @{ fcm_requests_for('fcm-old-1') }, 0, 'overrides.fcm.token: nor to the real token');
	is(stored_tokens('fcm-mock', 'fcm-old-1'), '1', 'overrides.fcm.token: the real token is not pruned');
	my @apns = @{ NovuTest::requests($mocks, 'apns') };
	is(scalar(grep { exists $_->{headers}{'x-injected'} || ($_->{headers}{'apns-topic'} // '') ne 'com.novu.test' } @apns), 0,
		'apns headers: no request carried an injected header or another apns-topic');
	is(scalar(grep { $_->{path} eq "/3/device/$apns1" } @apns), 0, 'apns headers: old-1 got no APNs request');
	my @expo = @{ NovuTest::expo_sends($mocks) };
	is(scalar(grep { $_ eq 'ExponentPushToken[victim]' || $_ eq 'ExponentPushToken[old-1]' } map { @{ $_->{tokens} // [] } } @expo), 0,
		'expo.to: no Expo message went to the fake target or to old-1');

	# the others of the same round are delivered
	is(q1(q{SELECT string_agg(provider_id || ':' || status, ',' ORDER BY provider_id) FROM novu.messages WHERE transaction_id = 'tx-old-2'}),
		'apns:sent,expo:sent,fcm:sent', 'old rows: the good trigger of the same round is delivered');

	# tokens of the wrong form: the APNs path never carries them, the Expo batch goes on without them
	my $m = msg('tx-old-3', '../x?y');
	is($m->{status}, 'failed', 'APNs "../x?y": failed');
	like($m->{last_error} // '', qr/^Invalid device token: the token contains a character that is not a hex digit/,
		'APNs "../x?y": the reason says why');
	is(scalar(grep { $_->{path} !~ m{^/3/device/[0-9a-f]{64}$} } @apns), 0, 'APNs: every request path is /3/device/<64 hex>');
	$m = msg('tx-old-3', 'not-an-expo-token');
	is($m->{status}, 'failed', 'invalid Expo token: failed');
	like($m->{last_error} // '', qr/^Invalid device token: the token is not of the form ExponentPushToken/, 'invalid Expo token: the reason says why');
	is(msg('tx-old-3', 'ExponentPushToken[old-4]')->{status}, 'sent', 'invalid Expo token: the other message of its trigger is sent');
	is(msg('tx-old-3', hex_token('old-apns-4'))->{status}, 'sent', 'APNs "../x?y": the other APNs message of its trigger is sent');
	is(scalar(grep { $_ eq 'not-an-expo-token' } map { @{ $_->{tokens} // [] } } @expo), 0, 'invalid Expo token: never sent to Expo');
	is(scalar(grep { ($_->{response}{status} // 0) != 200 } @expo), 0, 'Expo: every send request was accepted (no batch failed)');
}

$node->stop;
done_testing();
