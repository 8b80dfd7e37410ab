# 020_expo_isolation.pl: one message can never stop the others (DESIGN.md 5),
# on Expo, whose requests carry up to 100 messages of many triggers and whose
# errors about one message can come back for the whole request.
#
# 1. Two triggers committed in one transaction share a request; one has an
#    override Expo refuses (a negative ttl: a number, so the trigger-time
#    check lets it through).  Expo answers 400 VALIDATION_ERROR for the
#    request: each message is sent again in a request of its own, as a new
#    attempt; the valid one ends sent, only the offender fails, with Expo's
#    reason.
# 2. 99 tokens of the integration's Expo project and 1 of another project in
#    one request: Expo answers PUSH_TOO_MANY_EXPERIENCE_IDS with the tokens of
#    each project; each project's messages are sent again together, the 99 end
#    sent, and no message is a configuration error.
# 3. A group sent again and refused again is split into single messages.
# 4. An error about the integration (401 UNAUTHORIZED) is not split.
# 5. With novu.max_attempts 1, the group of 3 still ends as in 3: a split's
#    resends are allowed past the last attempt (at most two of them).
# Throughout: a message's token reaches Expo once per attempt recorded.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('expo_isolation', $mocks, 'novu.workers' => 1);
NovuTest::create_integrations($node, $mocks);
my $json = JSON::PP->new->canonical;

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }

sub identify
{
	my ($sub, @tokens) = @_;
	my $profile = { channels => [ { providerId => 'expo', integrationIdentifier => 'expo-mock',
					credentials => { deviceTokens => \@tokens } } ] };
	q1('SELECT novu.identify(' . lit($sub) . ', ' . lit($json->encode($profile)) . '::jsonb)');
}

sub msg { return NovuTest::message($node, @_); }

sub wait_done
{
	my ($like, $count, $timeout) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . " FROM novu.messages WHERE transaction_id LIKE " . lit($like), $timeout // 30);
}

# the tokens of each Expo send request, in order
sub send_tokens { return [ map { [ map { $_->{to} } @{ $_->{body} // [] } ] } @{ NovuTest::expo_sends($mocks) } ]; }

# a request reaches Expo once per attempt: each message's token was sent as many times as its attempts
sub sends_match_attempts
{
	my ($like, $name) = @_;
	my %sent;
	for my $r (@{ send_tokens() }) { $sent{$_}++ for @$r; }
	my $rows = NovuTest::decode(q1('SELECT coalesce(json_agg(json_build_array(device_token, attempts)), \'[]\')'
		  . ' FROM novu.messages WHERE transaction_id LIKE ' . lit($like)));
	my @off = grep { ($sent{ $_->[0] } // 0) != $_->[1] } @$rows;
	ok(@$rows > 0 && !@off, $name) or diag(explain(\@off));
}

$node->safe_psql('postgres', q{SELECT novu.create_workflow('iso', '[{"type": "push", "title": "T {{payload.n}}", "content": "C"}]')});

# ===========================================================================
# 1. A request Expo refuses for one message's value: only that message fails
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my ($good, $bad) = ('ExponentPushToken[iso-good]', 'ExponentPushToken[iso-bad]');
	identify('iso-good', $good);
	identify('iso-bad', $bad);
	# one transaction: both events are fanned out and claimed together, one request
	$node->safe_psql('postgres', q{
BEGIN;
SELECT novu.trigger('iso', '"iso-good"', '{"n": 1}', '{}', 'tx-val-good');
SELECT novu.trigger('iso', '"iso-bad"', '{"n": 2}', '{"expo": {"ttl": -5}}', 'tx-val-bad');
COMMIT;
});
	ok(wait_done('tx-val-%', 2), 'validation: both messages are final');
	my $sends = send_tokens();
	is_deeply([ sort @{ $sends->[0] // [] } ], [ sort $bad, $good ], 'validation: the two messages went out in one request');
	is(NovuTest::expo_sends($mocks)->[0]{response}{body}{errors}[0]{code}, 'VALIDATION_ERROR',
		'validation: Expo refused that request as a whole');

	my $g = msg('tx-val-good', $good);
	my $b = msg('tx-val-bad', $bad);
	is($g->{status}, 'sent', 'validation: the valid message ends sent');
	is($b->{status}, 'failed', 'validation: the offending message ends failed');
	like($b->{last_error} // '', qr/^VALIDATION_ERROR: .*ttl.*non-negative/, "validation: with Expo's reason");
	is($g->{attempts}, 2, 'validation: the valid message was sent again as its second attempt');
	is($b->{attempts}, 2, 'validation: so was the offending one');
	is(scalar @$sends, 3, 'validation: three requests: the shared one, then one per message');
	is_deeply([ map { scalar @$_ } @$sends[ 1 .. $#$sends ] ], [ 1, 1 ], 'validation: each message alone the second time');
	like(q1(q{SELECT string_agg(detail, '|' ORDER BY id) FROM novu.execution_details WHERE transaction_id = 'tx-val-good'}),
		qr/^Retry 2 scheduled in [0-9.]+ s: VALIDATION_ERROR \(a request of 2 messages, split into one per message\): .*ttl.*\|Message sent$/,
		'validation: the activity log of the valid message: a retry, then sent');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'tx-val-%' AND detail ~ 'configuration error'}),
		'0', 'validation: no configuration error');
	sends_match_attempts('tx-val-%', 'validation: each token reached Expo once per attempt recorded');
}

# ===========================================================================
# 2. 99 tokens of the project and 1 of another in one request: the 99 are sent
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my @tokens = map { sprintf('ExponentPushToken[proj-%03d]', $_) } 1 .. 100;
	my $foreign = $tokens[49];		# in the middle of the request
	NovuTest::set_tokens($mocks, 'expo', 'project:@other/app', $foreign);
	identify('proj-1', @tokens);
	q1(q{SELECT novu.trigger('iso', '"proj-1"', '{"n": 3}', '{}', 'tx-proj')});
	ok(wait_done('tx-proj', 100), 'projects: the 100 messages are final');

	my $sends = send_tokens();
	my $first = NovuTest::expo_sends($mocks)->[0];
	is(scalar @{ $sends->[0] // [] }, 100, 'projects: the 100 messages went out in one request');
	is($first->{response}{body}{errors}[0]{code}, 'PUSH_TOO_MANY_EXPERIENCE_IDS', 'projects: Expo refused it for mixing projects');
	is_deeply($first->{response}{body}{errors}[0]{details}{'@other/app'}, [$foreign], "projects: Expo's details name the foreign token");

	my @normal = grep { $_ ne $foreign } @tokens;
	is(q1(q{SELECT count(*) FROM novu.messages WHERE transaction_id = 'tx-proj' AND status = 'sent' AND device_token <> }
		  . lit($foreign)), '99', "projects: the 99 messages to the project's tokens end sent");
	is(scalar @$sends, 3, "projects: three requests: the mixed one, then one per project");
	is_deeply([ sort { $a <=> $b } map { scalar @$_ } @$sends[ 1 .. $#$sends ] ], [ 1, 99 ],
		'projects: the second time, the 99 together and the foreign token apart');
	ok((grep { @$_ == 1 && $_->[0] eq $foreign } @$sends[ 1 .. $#$sends ]), 'projects: the foreign token alone');
	is(msg('tx-proj', $foreign)->{status}, 'sent', 'projects: the foreign token, alone, is accepted by the mock');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'tx-proj'
	    AND detail ~ '^Retry 2 scheduled .*: PUSH_TOO_MANY_EXPERIENCE_IDS \(a request of 100 messages, split by Expo project\): All push notification messages'}),
		'100', 'projects: the activity log says each message is retried, split by project');
	is(q1(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'tx-proj' AND detail ~ 'configuration error'}),
		'0', 'projects: no message is a configuration error');
	is(q1(q{SELECT count(*) FROM novu.device_tokens t JOIN novu.integrations i ON i.id = t.integration_id
	    WHERE i.identifier = 'expo-mock' AND t.subscriber_id = 'proj-1'}), '100', 'projects: every token is kept');
	unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/is misconfigured/,
		'projects: the integration is not reported misconfigured');
	sends_match_attempts('tx-proj', 'projects: each token reached Expo once per attempt recorded');
}

# ===========================================================================
# 3. A group that is refused again is split into single messages: a split ends
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my ($ta, $tb, $tc) = map { "ExponentPushToken[grp-$_]" } qw(a b c);
	NovuTest::set_tokens($mocks, 'expo', 'fail:400', $tb);		# every request with it: 400 VALIDATION_ERROR
	NovuTest::set_tokens($mocks, 'expo', 'project:@other/app', $tc);
	identify('grp-1', $ta, $tb, $tc);
	q1(q{SELECT novu.trigger('iso', '"grp-1"', '{"n": 4}', '{}', 'tx-grp')});
	ok(wait_done('tx-grp', 3), 'group: the messages are final');
	my @sends = map { join('+', sort @$_) } @{ send_tokens() };
	is($sends[0], "$ta+$tb+$tc", 'group: the three messages went out in one request');
	is(join(',', sort @sends), join(',', sort("$ta+$tb+$tc", "$ta+$tb", $tc, $ta, $tb)),
		'group: all three, then by project, then the refused group one message each');
	is(msg('tx-grp', $ta)->{status}, 'sent', 'group: the valid message of the refused group ends sent');
	is(msg('tx-grp', $ta)->{attempts}, 3, 'group: at its third attempt');
	is(msg('tx-grp', $tc)->{status}, 'sent', "group: the other project's message ends sent");
	my $m = msg('tx-grp', $tb);
	is($m->{status}, 'failed', 'group: the refused message fails');
	is($m->{last_error}, 'VALIDATION_ERROR: Scripted failure 400', "group: alone, with Expo's reason, not split");
	sends_match_attempts('tx-grp', 'group: each token reached Expo once per attempt recorded');
}

# ===========================================================================
# 4. An error about the integration still answers for all its messages
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	my ($ta, $tb) = map { "ExponentPushToken[auth-$_]" } qw(a b);
	NovuTest::set_tokens($mocks, 'expo', 'fail:401', $tb);		# 401 UNAUTHORIZED for the request
	identify('auth-1', $ta, $tb);
	q1(q{SELECT novu.trigger('iso', '"auth-1"', '{"n": 5}', '{}', 'tx-auth')});
	ok(wait_done('tx-auth', 2), 'unauthorized: the messages are final');
	is(scalar @{ send_tokens() }, 1, 'unauthorized: one request, not split');
	is(q1(q{SELECT string_agg(status || ' ' || attempts || ' ' || last_error, '|') FROM novu.messages WHERE transaction_id = 'tx-auth'}),
		'failed 1 UNAUTHORIZED: Scripted failure 401|failed 1 UNAUTHORIZED: Scripted failure 401',
		'unauthorized: both fail at once');
	like(q1(q{SELECT string_agg(detail, '|') FROM novu.execution_details WHERE transaction_id = 'tx-auth'}),
		qr/^Integration configuration error: UNAUTHORIZED.*\|Integration configuration error: UNAUTHORIZED/,
		'unauthorized: as a configuration error');
}

# ===========================================================================
# 5. Refused at its last attempt beside another message: still split
# ===========================================================================
{
	NovuTest::reset_mocks($mocks);
	$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.max_attempts = 1; SELECT pg_reload_conf();});
	ok(NovuTest::wait_workers_reloaded($node), 'last attempt: the workers have novu.max_attempts 1');
	my ($ta, $tb, $tc) = map { "ExponentPushToken[last-$_]" } qw(a b c);
	NovuTest::set_tokens($mocks, 'expo', 'fail:400', $tb);
	NovuTest::set_tokens($mocks, 'expo', 'project:@other/app', $tc);
	identify('last-1', $ta, $tb, $tc);
	q1(q{SELECT novu.trigger('iso', '"last-1"', '{"n": 6}', '{}', 'tx-last')});
	ok(wait_done('tx-last', 3), 'last attempt: the messages are final');
	is(scalar @{ send_tokens() }, 5, 'last attempt: split by project, then the refused group one message each');
	is(msg('tx-last', $ta)->{status} . ' ' . msg('tx-last', $ta)->{attempts}, 'sent 3',
		'last attempt: the valid message of the refused group is sent, at its third attempt');
	is(msg('tx-last', $tc)->{status} . ' ' . msg('tx-last', $tc)->{attempts}, 'sent 2',
		"last attempt: the other project's message is sent, at its second");
	is(msg('tx-last', $tb)->{status}, 'failed', 'last attempt: only the refused message fails');
	sends_match_attempts('tx-last', 'last attempt: each token reached Expo once per attempt recorded');
	$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.max_attempts; SELECT pg_reload_conf();});
}

$node->stop;
done_testing();
