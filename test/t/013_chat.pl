# 013_chat.pl: the chat channel end to end (PROTOCOLS.md 4b) against the strict chat
# webhook mock: Discord, Slack, MS Teams, Mattermost and Novu's generic chat-webhook.
#
# 1. A chat step reaches every chat webhook a subscriber stored, with each service's
#    body (Discord ?wait=true and its message id, Mattermost's x-request-id, the generic
#    webhook signed with X-Novu-Signature), overrides merged; a push step of the same
#    workflow still goes to the devices.
# 2. A deleted or archived webhook removes the subscriber's credential; a rate limit
#    retries after its Retry-After; chat preferences skip the step.
# 3. Bad credentials are refused naming the field (http, a private address, device
#    tokens for a chat provider, a retargeting override), writing nothing; a rolled-back
#    trigger sends nothing.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use JSON::PP;
use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('chat', $mocks, 'novu.workers' => 2);
NovuTest::create_integrations($node, $mocks);
my $json = JSON::PP->new->canonical;
my $chat = $mocks->{urls}{chat};

sub lit { my ($s) = @_; $s =~ s/'/''/g; return "'$s'"; }
sub q1 { return NovuTest::query($node, $_[0]); }

NovuTest::control($mocks, 'POST', '/config', { chat => { secrets => { '/chat/signed' => 'chat-hmac-secret' } } });
q1("SELECT novu.create_integration('$_', '{}', '$_-main')") for qw(discord slack msteams mattermost);
q1(q{SELECT novu.create_integration('chat-webhook', '{"hmacSecretKey": "chat-hmac-secret"}', 'chat-webhook-main')});
q1(q{SELECT novu.create_workflow('ship', '[{"type": "chat", "content": "Order {{payload.order}} for {{subscriber.firstName}} shipped"},
      {"type": "push", "title": "Shipped", "content": "Order {{payload.order}}"}]')});

my %url = (
	discord => "$chat/api/webhooks/112233445566778899/tok-a",
	slack => "$chat/services/T000AAA/B000AAA/secretA",
	msteams => "$chat/webhookb2/group1\@tenant1/IncomingWebhook/hookA1/owner1",
	mattermost => "$chat/hooks/" . ("a" x 26),
	'chat-webhook' => "$chat/chat/signed",
);

sub set_cred
{
	my ($sub, $provider, $u) = @_;
	return q1('SELECT novu.set_credentials(' . lit($sub) . ', ' . lit($provider) . ', '
		  . lit($json->encode({ webhookUrl => $u })) . '::jsonb) IS NOT NULL');
}

sub trigger
{
	my ($to, $tx, $payload, $overrides) = @_;
	q1("SELECT novu.trigger('ship', " . lit($json->encode($to)) . '::jsonb, ' . lit($json->encode($payload // {}))
		  . '::jsonb, ' . lit($json->encode($overrides // {})) . '::jsonb, ' . lit($tx) . ')');
}

sub wait_final
{
	my ($tx, $count) = @_;
	return NovuTest::wait_for($node, "SELECT count(*) = $count AND count(*) FILTER (WHERE status IN ('pending', 'sending')) = 0"
		  . " FROM novu.messages WHERE channel IN ('chat', 'push') AND transaction_id = " . lit($tx), 30);
}

sub chat_msg
{
	my ($tx, $u) = @_;
	my $r = q1('SELECT row_to_json(m) FROM novu.messages m WHERE channel = \'chat\' AND transaction_id = ' . lit($tx)
		  . ' AND device_token = ' . lit($u));
	return $r eq '' ? {} : NovuTest::decode($r);
}

sub path_of { my ($u) = @_; $u =~ s{^https://[^/]+}{}; $u =~ s/\?.*//; return $u; }
sub chat_requests { my ($u) = @_; return [ grep { $_->{token} eq path_of($u) } @{ NovuTest::requests($mocks, 'chat') } ]; }
sub webhook_of
{
	my ($sub, $provider) = @_;
	return q1('SELECT coalesce(c.webhook_url, \'(none)\') FROM novu.subscriber_channels c JOIN novu.integrations i ON i.id = c.integration_id'
		  . ' WHERE c.subscriber_id = ' . lit($sub) . ' AND i.provider_id = ' . lit($provider));
}

# ---------------------------------------------------------------------------
# 1. Delivery
# ---------------------------------------------------------------------------
q1(q{SELECT novu.identify('ch-1', '{"firstName": "Ada", "channels": [{"providerId": "expo", "credentials": {"deviceTokens": ["ExponentPushToken[chat1]"]}}]}')});
ok(set_cred('ch-1', $_, $url{$_}), "$_: the webhook URL is stored as the subscriber's credential") for sort keys %url;
is(q1(q{SELECT channel FROM novu.integrations WHERE identifier = 'discord-main'}), 'chat', 'a discord integration is on the chat channel');
trigger('ch-1', 'ch-tx-1', { order => 42 }, { discord => { username => 'Shop' }, slack => { icon_emoji => ':package:' } });
ok(wait_final('ch-tx-1', 6), 'five chat messages and one push message final');
my $text = 'Order 42 for Ada shipped';
for my $p (sort keys %url)
{
	my $m = chat_msg('ch-tx-1', $url{$p});
	is($m->{status}, 'sent', "$p: sent");
	my $r = chat_requests($url{$p});
	is(scalar @$r, 1, "$p: one request");
	next unless @$r;
	my $e = $r->[0];
	is($e->{kind}, $p, "$p: the mock saw a $p webhook call");
	cmp_ok($e->{response}{status}, '<', 300, "$p: answered " . $e->{response}{status});
	my $field = $p eq 'discord' || $p eq 'chat-webhook' ? 'content' : 'text';
	is($e->{body}{$field}, $text, "$p: $field is the rendered content");
	if ($p eq 'discord')
	{
		like($e->{path}, qr/[?&]wait=true/, 'discord: ?wait=true');
		is($e->{body}{username}, 'Shop', 'discord: overrides.discord merged');
		is($m->{provider_message_id}, $e->{response}{body}{id}, 'discord: the message id Discord returned');
	}
	is($e->{body}{icon_emoji}, ':package:', 'slack: overrides.slack merged') if $p eq 'slack';
	if ($p eq 'mattermost')
	{
		my %h = map { lc($_) => $e->{response}{headers}{$_} } keys %{ $e->{response}{headers} };
		is($m->{provider_message_id}, $h{'x-request-id'}, 'mattermost: the x-request-id is the message id');
	}
	if ($p eq 'chat-webhook')
	{
		is($e->{body}{webhookUrl}, $url{$p}, 'chat-webhook: the body names the webhook');
		ok(defined $e->{headers}{'x-novu-signature'}, 'chat-webhook: signed (the mock verified X-Novu-Signature)');
	}
}
is(NovuTest::message($node, 'ch-tx-1', 'ExponentPushToken[chat1]')->{status}, 'sent', 'the push step of the same workflow is sent');

# ---------------------------------------------------------------------------
# 2. Deleted webhooks, rate limits, preferences
# ---------------------------------------------------------------------------
q1(q{SELECT novu.identify('ch-2', '{"firstName": "Bob"}')});
my %gone = (discord => "$chat/api/webhooks/223344556677889900/tok-b", slack => "$chat/services/T000BBB/B000BBB/secretB",
	mattermost => "$chat/hooks/" . ("b" x 26));
set_cred('ch-2', $_, $gone{$_}) for keys %gone;
NovuTest::set_tokens($mocks, 'chat', 'deleted', path_of($gone{discord}), path_of($gone{mattermost}));
NovuTest::set_tokens($mocks, 'chat', 'archived', path_of($gone{slack}));
trigger('ch-2', 'ch-tx-2', { order => 7 });
ok(wait_final('ch-tx-2', 4), 'deleted-webhook messages final (three chat, one push skipped)');
for my $p (sort keys %gone)
{
	is(chat_msg('ch-tx-2', $gone{$p})->{status}, 'failed', "$p: a deleted webhook fails the message");
	is(webhook_of('ch-2', $p), '(none)', "$p: and removes the subscriber's webhook URL");
}
is(q1(q{SELECT tokens_pruned FROM novu.stat_providers WHERE integration_identifier = 'discord-main'}), 1,
	'the removal is counted');

# a 403 or 404 that is not the provider saying the webhook is gone (Slack's
# action_prohibited, a proxy's 404 without Discord's code 10015) fails the
# message and keeps the credential
q1(q{SELECT novu.identify('ch-2b', '{"firstName": "Bo"}')});
my %kept = (discord => "$chat/api/webhooks/223344556677889911/tok-k", slack => "$chat/services/T000KKK/B000KKK/secretK");
set_cred('ch-2b', $_, $kept{$_}) for keys %kept;
NovuTest::set_tokens($mocks, 'chat', 'fail:404:0:1:Not Found', path_of($kept{discord}));
NovuTest::set_tokens($mocks, 'chat', 'fail:403:0:1:action_prohibited', path_of($kept{slack}));
trigger('ch-2b', 'ch-tx-2b', { order => 7 });
ok(wait_final('ch-tx-2b', 3), 'not-gone messages final');
for my $p (sort keys %kept)
{
	is(chat_msg('ch-tx-2b', $kept{$p})->{status}, 'failed', "$p: a 40x that does not say the webhook is gone fails the message");
	is(webhook_of('ch-2b', $p), $kept{$p}, "$p: and keeps the subscriber's webhook URL");
}

q1(q{SELECT novu.identify('ch-3', '{"firstName": "Cy"}')});
my $limited = "$chat/api/webhooks/334455667788990011/tok-c";
set_cred('ch-3', 'discord', $limited);
NovuTest::set_tokens($mocks, 'chat', 'fail:429:1:1', path_of($limited));
trigger('ch-3', 'ch-tx-3', { order => 8 });
ok(wait_final('ch-tx-3', 2), 'rate-limited message final');
my $m = chat_msg('ch-tx-3', $limited);
is($m->{status} . '/' . $m->{attempts}, 'sent/2', 'discord 429: sent at the second attempt');
my $r = chat_requests($limited);
my $gap = @$r == 2 ? ($r->[1]{time} - $r->[0]{time}) / 1000 : 0;
cmp_ok($gap, '>=', 0.95, sprintf('discord 429: the retry waited %.2f s (retry_after 1)', $gap));

# a retry_after in the body only (no Retry-After header) is bounded as the
# header is: a day at most, not 1e9 seconds
q1(q{SELECT novu.identify('ch-3b', '{"firstName": "Cy"}')});
my $limited_long = "$chat/api/webhooks/334455667788990012/tok-cb";
set_cred('ch-3b', 'discord', $limited_long);
NovuTest::set_tokens($mocks, 'chat', 'fail:429:1000000000:1:body-only', path_of($limited_long));
trigger('ch-3b', 'ch-tx-3b', { order => 8 });
ok(NovuTest::wait_for($node, q{SELECT status = 'pending' AND attempts = 1 FROM novu.messages WHERE transaction_id = 'ch-tx-3b' AND channel = 'chat'}, 30),
	'discord 429, retry_after 1e9 in the body: the message waits for its retry');
is(q1(q{SELECT next_attempt_at BETWEEN now() + interval '23 hours' AND now() + interval '25 hours'
          FROM novu.deliveries WHERE transaction_id = 'ch-tx-3b' AND channel = 'chat'}), 't',
	'discord 429, retry_after 1e9 in the body: retried in a day, not in 31 years');
q1(q{SELECT novu.delete_messages('ch-tx-3b')});

q1(q{SELECT novu.identify('ch-4', '{"firstName": "Di", "channels": [{"providerId": "expo", "credentials": {"deviceTokens": ["ExponentPushToken[chat4]"]}}]}')});
my $muted = "$chat/services/T000DDD/B000DDD/secretD";
set_cred('ch-4', 'slack', $muted);
q1(q{SELECT novu.set_preference('ch-4', 'ship', NULL, '{"chat": false}') IS NOT NULL});
trigger('ch-4', 'ch-tx-4', { order => 9 });
ok(wait_final('ch-tx-4', 2), 'preference messages final');
is(q1(q{SELECT status || ': ' || coalesce(last_error, '') FROM novu.messages WHERE transaction_id = 'ch-tx-4' AND channel = 'chat'}),
	'skipped: Disabled by subscriber preferences', 'chat disabled by the subscriber: skipped');
is(scalar @{ chat_requests($muted) }, 0, 'and nothing sent to the webhook');
is(NovuTest::message($node, 'ch-tx-4', 'ExponentPushToken[chat4]')->{status}, 'sent', 'the push step still goes');

q1(q{SELECT novu.identify('ch-5', '{"firstName": "Ed"}')});
trigger('ch-5', 'ch-tx-5', { order => 10 });
ok(wait_final('ch-tx-5', 2), 'no-credential messages final');
is(q1(q{SELECT last_error FROM novu.messages WHERE transaction_id = 'ch-tx-5' AND channel = 'chat'}),
	'Subscriber has no chat webhook URL', 'a subscriber without chat credentials: skipped with the reason');

# ---------------------------------------------------------------------------
# 3. Bad input, rollback
# ---------------------------------------------------------------------------
my @bad = (
	[ 'http URL', q{SELECT novu.set_credentials('ch-1', 'discord', '{"webhookUrl": "http://discord.com/api/webhooks/1/x"}')}, qr/webhookUrl must use https/ ],
	[ 'private address', q{SELECT novu.set_credentials('ch-1', 'slack', '{"webhookUrl": "https://10.0.0.8/services/T/B/x"}')}, qr/webhookUrl/ ],
	[ 'metadata address', q{SELECT novu.set_credentials('ch-1', 'msteams', '{"webhookUrl": "https://169.254.169.254/latest"}')}, qr/webhookUrl/ ],
	[ 'device tokens for discord', q{SELECT novu.set_credentials('ch-1', 'discord', '{"deviceTokens": ["x"]}')}, qr/deviceTokens is not used by provider "discord"/ ],
	[ 'no webhookUrl', q{SELECT novu.set_credentials('ch-1', 'mattermost', '{}')}, qr/webhookUrl is required/ ],
	[ 'a retargeting override', q{SELECT novu.trigger('ship', '"ch-1"', '{}', '{"discord": {"webhookUrl": "https://evil.example/x"}}')}, qr/overrides.discord.webhookUrl is not allowed/ ],
	[ 'a title on a chat step', q{SELECT novu.create_workflow('bad-chat', '[{"type": "chat", "title": "t", "content": "c"}]')}, qr/title is not used by chat steps/ ],
	[ 'a push provider on a chat step', q{SELECT novu.create_workflow('bad-chat', '[{"type": "chat", "content": "c", "providers": ["fcm"]}]')}, qr/another channel/ ],
);
my $before = q1(q{SELECT count(*) || '/' || count(webhook_url) FROM novu.subscriber_channels});
for my $b (@bad)
{
	my ($what, $sql, $re) = @$b;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	isnt($ret, 0, "$what: refused");
	like($err, $re, "$what: the error names the field");
}
is(q1(q{SELECT count(*) || '/' || count(webhook_url) FROM novu.subscriber_channels}), $before, 'nothing was written');
is(q1(q{SELECT count(*) FROM novu.workflows WHERE workflow_id = 'bad-chat'}), 0, 'no workflow was created');

my $quiet = "$chat/hooks/" . ("q" x 26);
q1(q{SELECT novu.identify('ch-6', '{"firstName": "Fay"}')});
set_cred('ch-6', 'mattermost', $quiet);
$node->safe_psql('postgres', q{BEGIN; SELECT novu.trigger('ship', '"ch-6"', '{"order": 1}', '{}', 'ch-tx-rb'); ROLLBACK;});
trigger('ch-5', 'ch-tx-7', { order => 11 });
ok(wait_final('ch-tx-7', 2), 'a later trigger is processed');
is(scalar @{ chat_requests($quiet) }, 0, 'the rolled-back trigger sent nothing');

$node->stop;
done_testing();
