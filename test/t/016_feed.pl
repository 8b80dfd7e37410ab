# 016_feed.pl: a trigger with an in_app step reaches the subscriber's feed
# through the delivery worker (rendered: content, subject, the cta's url; the
# actor; the payload), next to a push step of the same workflow sent to FCM;
# a LISTEN session receives NOTIFY novu_in_app {"subscriberId", "unseenCount"}
# after the worker's commit and after each committed mark, and nothing for a
# rolled-back trigger or mark.  A worker that delivers only in_app messages
# keeps no memory of its past batches.  previousStep filters read the in_app
# message's read/seen state after a delay.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('feed', $mocks);
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', <<'SQL');
SELECT novu.create_workflow('new-comment', '[
  {"type": "in_app", "subject": "{{actor.firstName}} replied",
   "content": "{{actor.firstName}} on {{payload.post}}: {{payload.text | upcase}}",
   "cta": {"type": "redirect", "data": {"url": "/posts/{{payload.postId}}"}},
   "actions": [{"type": "primary", "content": "Open"}]},
  {"type": "push", "title": "New reply", "content": "{{payload.text}}"}]');
SELECT novu.identify('carol', '{"firstName": "Carol", "channels": [
    {"providerId": "fcm", "credentials": {"deviceTokens": ["fcm-carol"]}}]}');
SELECT novu.identify('dave', '{"firstName": "Dave", "avatar": "https://cdn.example.com/dave.png"}');
SQL

# the listener: psql in the background; notifications are printed as psql
# runs its next command, so it is polled with a no-op query until a deadline
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN novu_in_app');
my $heard = '';

# Poll the listener until its output matches $re (default timeout 30 s).
sub hear
{
	my ($re, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		$heard .= $listener->query_safe('SELECT 1') . "\n";
		return 1 if $heard =~ $re;
		usleep(50_000);
	}
	diag("listener heard:\n$heard");
	return 0;
}

# The unseen counts heard so far, in order.
sub counts { return ($heard =~ /"unseenCount": (\d+)\}"/g); }

# Poll the listener until it heard at least n notifications.
sub hear_n
{
	my ($n, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		return 1 if scalar(my @c = counts()) >= $n;
		$heard .= $listener->query_safe('SELECT 1') . "\n";
		usleep(50_000);
	}
	diag("listener heard:\n$heard");
	return 0;
}

# The notification of a subscriber's unseen count, as psql prints it.
sub note_of
{
	my ($sub, $count) = @_;
	return qr/Asynchronous notification "novu_in_app" with payload "\{"subscriberId": "$sub", "unseenCount": $count\}"/;
}

# 1. a committed trigger: the worker renders and stores the feed message,
# sends the push step, and notifies after its commit
NovuTest::query($node, q{SELECT novu.trigger('new-comment', '"carol"',
    '{"post": "Release notes", "postId": 7, "text": "looks good"}', '{}', 'fc-1', '"dave"')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.messages WHERE transaction_id = 'fc-1' AND status = 'sent'}),
	'both steps end sent');
ok(hear(note_of('carol', 1)), 'LISTEN novu_in_app heard carol\'s unseen count 1 after the worker committed');

my $feed = NovuTest::decode(NovuTest::query($node, q{SELECT novu.feed('carol')}));
is($feed->{totalCount}, 1, 'one feed item');
my $item = $feed->{data}[0];
is($item->{content}, 'Dave on Release notes: LOOKS GOOD', 'content rendered with actor, payload and a filter');
is($item->{subject}, 'Dave replied', 'subject rendered');
is($item->{cta}{data}{url}, '/posts/7', 'cta url rendered');
is($item->{cta}{action}{buttons}[0]{content}, 'Open', 'action button kept');
is($item->{actor}{subscriberId}, 'dave', 'actor on the item');
is($item->{avatar}, 'https://cdn.example.com/dave.png', 'avatar: the actor\'s');
is($item->{payload}{postId}, 7, 'payload on the item');
is_deeply([ $item->{seen}, $item->{read}, $item->{channel}, $item->{transactionId}, $item->{templateIdentifier} ],
	[ JSON::PP::false, JSON::PP::false, 'in_app', 'fc-1', 'new-comment' ], 'Novu\'s fields');
is(NovuTest::query($node, q{SELECT string_agg(detail, ',' ORDER BY id) FROM novu.execution_details
    WHERE transaction_id = 'fc-1' AND channel = 'in_app'}), 'Message created', 'activity log: Message created');
my $fcm = NovuTest::requests($mocks, 'fcm');
is(scalar @$fcm, 1, 'the push step reached FCM once');
is($fcm->[0]{body}{message}{notification}{body}, 'looks good', 'FCM: the push step\'s own content');

# 2. a rolled-back trigger: no feed message, no notification
$node->safe_psql('postgres', q{BEGIN; SELECT novu.trigger('new-comment', '"carol"', '{"text": "x"}', '{}', 'fc-rolled-back'); ROLLBACK;});

# 3. a rolled-back mark sends nothing; the committed marks after it do, in order
my $id = $item->{_id};
$node->safe_psql('postgres', qq{BEGIN; SELECT novu.mark_as('carol', '"$id"', '{"seen": true}'); ROLLBACK;});
NovuTest::query($node, qq{SELECT novu.mark_as('carol', '"$id"', '{"read": true}')});
ok(hear_n(2), 'the committed read mark notified');
NovuTest::query($node, qq{SELECT novu.mark_seen('carol', '$id')});
ok(hear(note_of('carol', 0)), 'the committed seen mark notified unseen count 0');
is_deeply([ counts() ], [ 1, 1, 0 ], 'notifications in commit order: delivery, read mark, seen mark; none from the rollbacks');
is(NovuTest::query($node, q{SELECT count(*) FROM novu.in_app_messages WHERE transaction_id = 'fc-rolled-back'}), '0',
	'the rolled-back trigger left no feed message');

# 4. the subscriber's marks are its own: dave cannot mark carol's message
my ($rc, $out, $err) = $node->psql('postgres', qq{SELECT novu.mark_as('dave', '"$id"', '{"seen": false}')});
like($err, qr/message "$id" not found in the feed of subscriber "dave"/, 'another subscriber\'s message id is an error');
is(NovuTest::query($node, qq{SELECT seen FROM novu.in_app_messages WHERE id = $id}), 't', 'and nothing was written');

# 5. in_app only: a worker whose batches end without a provider answer frees
# them all the same (they waited for a results flush that never came: each
# claim's memory, some MB for 500 digests, stayed for the worker's lifetime)
$node->safe_psql('postgres', q{SELECT novu.create_workflow('feed-only', '[{"type": "in_app", "content": "#{{payload.n}}"}]')});
for my $round (1 .. 12)
{
	NovuTest::query($node, qq{SELECT count(novu.trigger('feed-only', '"dave"', jsonb_build_object('n', i), '{}',
	    'fo-$round-' || i)) FROM generate_series(1, 50) i});
	ok(NovuTest::wait_for($node, qq{SELECT count(*) = 50 FROM novu.in_app_messages WHERE transaction_id LIKE 'fo-$round-%'}),
		"in_app round $round stored") or last;
}
my $workers = NovuTest::query($node, q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
    WHERE backend_type LIKE 'novu delivery worker%'});
my @pids = split /,/, $workers;
ok(scalar @pids >= 1, 'delivery workers running');
# The batches the workers keep (their "novu batch" memory contexts), from
# pg_log_backend_memory_contexts; undef if a worker did not log its contexts.
sub batches_kept
{
	my $log_at = -s $node->logfile;
	NovuTest::query($node, "SELECT pg_log_backend_memory_contexts($_)") for @pids;
	my $deadline = time() + 30;
	my $log;
	while (time() < $deadline)
	{
		$log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_at);
		last if (() = $log =~ /Grand total/g) >= scalar @pids;
		undef $log;
		usleep(100_000);
	}
	return undef unless defined $log;
	return scalar(() = $log =~ /level: 1; novu batch:/g);
}
my $kept = batches_kept();
ok(defined $kept, 'each worker logged its memory contexts');
is($kept, 0, 'no worker keeps the memory of a finished in_app batch (12 batches or more were claimed)');

# 5b. a claim that fails (here: the worker role lost a privilege the claim
# needs) frees its batch; the workers pause and claim again once it is back
my $err_at = -s $node->logfile;
$node->safe_psql('postgres', 'REVOKE SELECT ON novu.events_id_seq FROM novu_worker');
NovuTest::query($node, q{SELECT novu.trigger('feed-only', '"dave"', '{"n": 0}', '{}', 'fo-after-errors')});
my $errors = 0;
my $err_deadline = time() + 30;
while (time() < $err_deadline)
{
	$errors = () = PostgreSQL::Test::Utils::slurp_file($node->logfile, $err_at) =~ /permission denied for sequence events_id_seq/g;
	last if $errors >= 3;
	usleep(100_000);
}
cmp_ok($errors, '>=', 3, "the workers' claims failed ($errors errors logged)");
is(batches_kept(), 0, 'no worker keeps the batch of a failed claim');
$node->safe_psql('postgres', 'GRANT SELECT ON novu.events_id_seq TO novu_worker');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 1 FROM novu.in_app_messages WHERE transaction_id = 'fo-after-errors'}),
	'once the privilege is back, the trigger is delivered');

# 6. previousStep filters, each way: in_app, a delay, then a push step only if
# the in_app message is still unread and another only if it was seen (Novu's
# "in_app, delay, then push if unseen")
$node->safe_psql('postgres', q{SELECT novu.create_workflow('nudge', '[
  {"type": "in_app", "content": "you have a reply"},
  {"type": "delay", "amount": 5, "unit": "seconds"},
  {"type": "push", "title": "still unread", "content": "#{{payload.n}}",
   "filters": [{"children": [{"on": "previousStep", "step": "in_app-0", "stepType": "unread"}]}]},
  {"type": "push", "title": "was seen", "content": "#{{payload.n}}",
   "filters": [{"children": [{"on": "previousStep", "step": "in_app-0", "stepType": "seen"}]}]}]')});
NovuTest::reset_mocks($mocks);
NovuTest::query($node, q{SELECT novu.trigger('nudge', '"carol"', '{"n": 1}', '{}', 'nudge-read');
    SELECT novu.trigger('nudge', '"carol"', '{"n": 2}', '{}', 'nudge-unread')});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.in_app_messages WHERE transaction_id LIKE 'nudge-%'}),
	'previousStep: both in_app messages stored');
my $read_id = NovuTest::query($node, q{SELECT id FROM novu.in_app_messages WHERE transaction_id = 'nudge-read'});
NovuTest::query($node, qq{SELECT novu.mark_as('carol', '"$read_id"', '{"read": true, "seen": true}')});
is(NovuTest::query($node, q{SELECT count(*) FROM novu.step_runs WHERE transaction_id LIKE 'nudge-%'
    AND status = 'waiting' AND due_at > clock_timestamp()}), '2', 'previousStep: marked while both delays wait');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.execution_details WHERE transaction_id LIKE 'nudge-%'
    AND detail = 'Step was filtered based on steps filters'}),
	'previousStep: one push step of each notification filtered');
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.messages WHERE transaction_id LIKE 'nudge-%'
    AND channel = 'push' AND status = 'sent'}), 'previousStep: the other sent');
my %got = map { ($_->{body}{message}{notification}{body} => $_->{body}{message}{notification}{title}) }
	@{ NovuTest::requests($mocks, 'fcm') };
is_deeply(\%got, { '#1' => 'was seen', '#2' => 'still unread' },
	'previousStep: the read message got "was seen" only, the unread one "still unread" only');

$listener->quit;
done_testing();
