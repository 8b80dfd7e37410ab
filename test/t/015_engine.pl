# 015_engine.pl: the workflow engine with the worker and the FCM mock.
#  1. a 2-second delay: no message before it is due, one after, within
#     novu.poll_interval of its time
#  2. the same across a restart, and across kill -9 of the worker (crash
#     restart): the delay fires once, its message is sent once
#  3. a digest of 50 events: one message listing the 50 (step.events,
#     step.total_count), oldest first
#  4. backoff: the first event goes at once, the next ones are digested
#  5. filters each way (payload, subscriber, isOnline)
#  6. cancel of a delay, of a digest's leader and of a follower
#  (and a trigger's overrides.steps.<stepId>, in 1)
# Every wait polls with a deadline; units are seconds.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mocks = NovuTest::start_mocks();
# one worker (section 2 kills it), and a crash restarts the cluster
my $node = NovuTest::new_node('engine', $mocks,
	restart_after_crash => 'on',
	'novu.workers' => 1);
NovuTest::create_integrations($node, $mocks);


# FCM requests for one token, oldest first.
sub fcm_for
{
	my ($token) = @_;
	return [ grep { $_->{body}{message}{token} eq $token } @{ NovuTest::requests($mocks, 'fcm') } ];
}

my $q = sub { NovuTest::query($node, $_[0]) };

$node->safe_psql('postgres', <<'SQL');
SELECT novu.create_workflow('later', '[{"type": "delay", "amount": 2, "unit": "seconds"},
    {"type": "push", "title": "Later {{payload.n}}", "content": "for {{subscriber.subscriberId}}"}]');
SELECT novu.create_workflow('later-6s', '[{"type": "delay", "amount": 6, "unit": "seconds"},
    {"type": "push", "title": "Later {{payload.n}}", "content": "for {{subscriber.subscriberId}}"}]');
SELECT novu.create_workflow('comments', '[{"type": "digest", "amount": 5, "unit": "seconds", "digestKey": "postId"},
    {"type": "push", "title": "{{step.total_count}} new comments",
     "content": "{% for e in step.events %}{{e.n}},{% endfor %}"}]');
SELECT novu.create_workflow('bursty', '[{"type": "digest", "amount": 2, "unit": "seconds", "backoff": true,
                                         "backoffAmount": 5, "backoffUnit": "seconds"},
    {"type": "push", "title": "{% if step.digest %}{{step.total_count}} digested{% else %}at once{% endif %}",
     "content": "{{payload.n}}"}]');
SELECT novu.create_workflow('targeted', '[
    {"type": "push", "stepId": "vip", "title": "vip", "content": "c",
     "filters": [{"type": "GROUP", "value": "AND", "children": [
        {"on": "payload", "field": "vip", "operator": "EQUAL", "value": true},
        {"on": "subscriber", "field": "data.plan", "operator": "IN", "value": ["pro", "team"]}]}]},
    {"type": "push", "stepId": "offline", "title": "offline", "content": "c",
     "filters": [{"type": "GROUP", "value": "AND", "children": [{"on": "isOnline", "value": false}]}]}]');
SELECT count(novu.identify(s, jsonb_build_object('data', jsonb_build_object('plan', CASE WHEN s = 'pro' THEN 'pro' ELSE 'free' END),
    'channels', jsonb_build_array(jsonb_build_object('providerId', 'fcm',
        'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-' || s)))))))
  FROM unnest(ARRAY['d1', 'd2', 'd3', 'd4', 'g1', 'b1', 'pro', 'free', 'c1', 'c2']) s;
SQL

######################################################################
# 1. a 2-second delay fires once, on time
# (overrides.steps.<stepId>: the push step's default id is push-1)
$q->(q{SELECT novu.trigger('later', '"d1"', '{"n": 1}', '{"steps": {"push-1": {"fcm": {"android": {"priority": "HIGH"}}},
    "push-9": {"fcm": {"android": {"ttl": "5s"}}}}}', 'delay-1')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.step_runs WHERE transaction_id = 'delay-1' AND status = 'waiting'}, 30),
	'delay: the notification waits in a step row');
is($q->(q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'delay-1'}), '0', 'delay: no message before it is due');
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'delay-1' AND status = 'sent'}, 30),
	'delay: the message is sent after the delay');
is($q->(q{SELECT (d.created_at >= r.due_at)::text || ',' || (d.created_at - r.due_at < interval '1 second')::text
    FROM novu.deliveries d JOIN novu.step_runs r ON r.transaction_id = d.transaction_id WHERE d.transaction_id = 'delay-1'}),
	'true,true', 'delay: the step ran at its due time, within novu.poll_interval (1 s)');
is($q->(q{SELECT round(extract(epoch FROM r.due_at - e.created_at))::int FROM novu.step_runs r
    JOIN novu.events e ON e.transaction_id = r.transaction_id WHERE r.transaction_id = 'delay-1'}), '2', 'delay: due 2 s after the trigger');
is(scalar @{ fcm_for('fcm-d1') }, 1, 'delay: FCM received one request');
is(fcm_for('fcm-d1')->[0]{body}{message}{notification}{title}, 'Later 1', 'delay: rendered with the payload');
is_deeply(fcm_for('fcm-d1')->[0]{body}{message}{android}, { priority => 'HIGH' },
	'overrides.steps.<stepId> reach that step only');
is($q->(q{SELECT string_agg(detail, ' | ' ORDER BY id) FROM novu.execution_details WHERE transaction_id = 'delay-1'}) =~ s/\d{4}-\S+Z/<t>/r,
	'Step delayed until <t> | Delay finished | Message sent', 'delay: the activity log follows the notification');

# 1b. a delay shorter than the poll interval does not wait for the next poll:
# the worker that created it claims it at its due time
$node->safe_psql('postgres', q{ALTER SYSTEM SET novu.poll_interval = '30s'; SELECT pg_reload_conf();});
ok(NovuTest::poll_until($node, q{SELECT current_setting('novu.poll_interval') = '30s'}, 10), 'short delay: poll interval 30 s');
# the workers' claims scheduled under the old 1 s interval have run by then
ok(NovuTest::wait_old_poll_spent($node), 'short delay: old schedule spent');
$q->(q{SELECT novu.trigger('later', '"d4"', '{"n": 4}', '{}', 'delay-short')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'delay-short' AND status = 'sent'}, 20),
	'short delay: sent with a 30 s poll interval');
is($q->(q{SELECT (d.created_at - r.due_at < interval '5 seconds')::text
    FROM novu.deliveries d JOIN novu.step_runs r ON r.transaction_id = d.transaction_id WHERE d.transaction_id = 'delay-short'}),
	'true', 'short delay: the step ran within seconds of its due time, not at the next poll (30 s)');

######################################################################
# 1c. 600 delays due at the same moment: more than one claim takes (a claim
# goes on with at most novu.batch_size, 500, due steps), and the claims follow
# each other at once, not at the next poll (still 30 s): every one fires once,
# within seconds (bounds a slow machine keeps, far below the poll interval)
$q->(q{SELECT count(novu.identify('m' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'fcm', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-m' || i)))))))
    FROM generate_series(1, 600) i});
$q->(q{SELECT count(novu.trigger('later', to_jsonb('m' || i), jsonb_build_object('n', i), '{}', 'many-' || i))
    FROM generate_series(1, 600) i});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 600 FROM novu.messages WHERE transaction_id LIKE 'many-%' AND status = 'sent'}, 60),
	'600 delays due together: every message sent');
is($q->(q{SELECT (max(due_at) - min(due_at) < interval '3 seconds')::text || ',' || count(*) FROM novu.step_runs WHERE transaction_id LIKE 'many-%'}),
	'true,600', '600 delays due together: due within seconds of each other (their fan-outs\' time + 2 s)');
is($q->(q{SELECT (max(d.created_at - r.due_at) < interval '5 seconds')::text || ',' || (count(DISTINCT d.created_at) >= 2)::text
    FROM novu.deliveries d JOIN novu.step_runs r ON r.transaction_id = d.transaction_id WHERE d.transaction_id LIKE 'many-%'}),
	'true,true', '600 delays due together: in several claims, the last within seconds of the due time, not at the next poll');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET novu.poll_interval; SELECT pg_reload_conf();});
ok(NovuTest::poll_until($node, q{SELECT current_setting('novu.poll_interval') = '1s'}, 10), 'poll interval back to 1 s');
is($q->(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'many-%' AND detail = 'Delay finished'}),
	'600', '600 delays due together: each finished once');
my %per_token;
$per_token{ $_->{body}{message}{token} }++ for grep { $_->{body}{message}{token} =~ /^fcm-m\d+$/ } @{ NovuTest::requests($mocks, 'fcm') };
is(scalar(keys %per_token) . ',' . scalar(grep { $_ != 1 } values %per_token), '600,0',
	'600 delays due together: FCM received one request per token');

######################################################################
# 2. across a restart, and across kill -9 of the worker
$q->(q{SELECT novu.trigger('later', '"d2"', '{"n": 2}', '{}', 'delay-restart')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.step_runs WHERE transaction_id = 'delay-restart' AND status = 'waiting'}, 30),
	'restart: the delay waits');
$node->restart;
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'delay-restart' AND status = 'sent'}, 30),
	'restart: the delay fires after the restart');
is(scalar @{ fcm_for('fcm-d2') }, 1, 'restart: sent once');
is($q->(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'delay-restart' AND detail = 'Delay finished'}),
	'1', 'restart: the delay finished once');

# kill -9 of the worker while the delay waits (6 s: the kill lands seconds
# before the due time even on a slow machine; the worker's own commits are
# asynchronous, so a kill just after a send could repeat it, by design)
my $wpid = $q->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
like($wpid, qr/^\d+$/, 'kill -9: one delivery worker runs');
$q->(q{SELECT novu.trigger('later-6s', '"d3"', '{"n": 3}', '{}', 'delay-kill')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.step_runs WHERE transaction_id = 'delay-kill' AND status = 'waiting'}, 30),
	'kill -9: the delay waits');
is($q->(q{SELECT now() < due_at - interval '1 second' FROM novu.step_runs WHERE transaction_id = 'delay-kill'}), 't',
	'kill -9: the kill comes before the due time');
ok(kill('KILL', $wpid), "kill -9: SIGKILL sent to the worker (PID $wpid)");
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'delay-kill' AND status = 'sent'}, 60),
	'kill -9: the delay fires after the crash restart');
is(scalar @{ fcm_for('fcm-d3') }, 1, 'kill -9: sent once');
is($q->(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id = 'delay-kill' AND detail = 'Delay finished'}),
	'1', 'kill -9: the delay finished once');
is($q->(q{SELECT count(*) FROM novu.deliveries WHERE transaction_id = 'delay-kill'}), '1', 'kill -9: one message made');

######################################################################
# 3. a digest of 50 events: one message listing 50, oldest first
$q->(q{SELECT count(novu.trigger('comments', '"g1"', jsonb_build_object('postId', 7, 'n', i), '{}', 'dg-' || i))
    FROM generate_series(1, 25) i});
$q->(q{SELECT count(novu.trigger('comments', '"g1"', jsonb_build_object('postId', 7, 'n', i), '{}', 'dg-' || i))
    FROM generate_series(26, 50) i});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id LIKE 'dg-%' AND status = 'sent'}, 30),
	'digest: one message sent');
my $dg = fcm_for('fcm-g1');
is(scalar @$dg, 1, 'digest: FCM received one request');
is($dg->[0]{body}{message}{notification}{title}, '50 new comments', 'digest: step.total_count');
is($dg->[0]{body}{message}{notification}{body}, join('', map { "$_," } 1 .. 50), 'digest: step.events, oldest first');
is($q->(q{SELECT transaction_id FROM novu.messages WHERE transaction_id LIKE 'dg-%'}), 'dg-1', 'digest: sent for the first event');
is($q->(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'dg-%' AND detail LIKE 'Merged into the digest%'}),
	'49', 'digest: 49 events merged');

######################################################################
# 4. backoff: the first event at once, the next ones digested
$q->(q{SELECT novu.trigger('bursty', '"b1"', '{"n": 1}', '{}', 'bo-1')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'bo-1' AND status = 'sent'}, 30),
	'backoff: the first event is sent');
is($q->(q{SELECT count(*) FROM novu.step_runs WHERE transaction_id = 'bo-1' AND status = 'waiting'}), '0',
	'backoff: it did not wait');
$q->(q{SELECT novu.trigger('bursty', '"b1"', '{"n": 2}', '{}', 'bo-2')});
$q->(q{SELECT novu.trigger('bursty', '"b1"', '{"n": 3}', '{}', 'bo-3')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = 'bo-2' AND status = 'sent'}, 30),
	'backoff: the next events are digested and sent');
is_deeply([ map { $_->{body}{message}{notification}{title} } @{ fcm_for('fcm-b1') } ], [ 'at once', '2 digested' ],
	'backoff: one message at once, then one digest of two');

######################################################################
# 5. filters each way
$q->(q{SELECT novu.set_online_status('free', true)});
$q->(q{SELECT novu.trigger('targeted', '["pro", "free"]', '{"vip": true}', '{}', 'flt-1')});
$q->(q{SELECT novu.trigger('targeted', '"pro"', '{"vip": false}', '{}', 'flt-2')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 3 FROM novu.messages WHERE transaction_id LIKE 'flt-%' AND status = 'sent'}, 30),
	'filters: three messages sent');
is_deeply([ map { $_->{body}{message}{notification}{title} } @{ fcm_for('fcm-pro') } ], [ 'vip', 'offline', 'offline' ],
	'filters: the pro subscriber gets the vip step only with vip true, and the offline step (offline)');
is_deeply([ map { $_->{body}{message}{notification}{title} } @{ fcm_for('fcm-free') } ], [],
	'filters: the free subscriber, online, gets nothing');
is($q->(q{SELECT count(*) FROM novu.execution_details WHERE transaction_id LIKE 'flt-%'
    AND detail = 'Step was filtered based on steps filters'}), '3', 'filters: the filtered steps are in the activity log');

######################################################################
# 6. cancel: a delay; a digest's leader and a follower
$q->(q{SELECT novu.trigger('later-6s', '"c1"', '{"n": 9}', '{}', 'cancel-delay')});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.step_runs WHERE transaction_id = 'cancel-delay' AND status = 'waiting'}, 30),
	'cancel: the delay waits');
is($q->(q{SELECT novu.cancel('cancel-delay')}), 't', 'cancel: a waiting delay is canceled');
$q->(q{SELECT novu.trigger('comments', '"c2"', jsonb_build_object('postId', 1, 'n', i), '{}', 'cd-' || i) FROM generate_series(1, 3) i});
ok(NovuTest::poll_until($node, q{SELECT count(*) = 3 FROM novu.digest_events WHERE transaction_id LIKE 'cd-%'}, 30), 'cancel: three events in the window');
is($q->(q{SELECT novu.cancel('cd-2')}), 't', 'cancel: a follower');
is($q->(q{SELECT novu.cancel('cd-1')}), 't', 'cancel: the leader');
ok(NovuTest::poll_until($node, q{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id LIKE 'cd-%' AND status = 'sent'}, 30),
	'cancel: the window still ends with one message');
is($q->(q{SELECT transaction_id FROM novu.messages WHERE transaction_id LIKE 'cd-%'}), 'cd-3',
	'cancel: the window passed to the oldest event left');
my $cd = fcm_for('fcm-c2');
is(scalar @$cd, 1, 'cancel: one request');
is($cd->[0]{body}{message}{notification}{title} . ' ' . $cd->[0]{body}{message}{notification}{body}, '1 new comments 3,',
	'cancel: only the event left is listed');
ok(NovuTest::poll_until($node, q{SELECT now() > due_at + interval '1500 milliseconds' FROM novu.step_runs WHERE transaction_id = 'cancel-delay'}, 30),
	'cancel: the canceled delay is past its due time');
is(scalar @{ fcm_for('fcm-c1') }, 0, 'cancel: the canceled delay sent nothing');
is($q->(q{SELECT status FROM novu.step_runs WHERE transaction_id = 'cancel-delay'}), 'canceled', 'cancel: the delay row says canceled');

# the worker never failed on these
unlike(slurp_file($node->logfile), qr/novu: (?:continuing due steps|fan-out) failed/, 'no failed fan-out or continuation in the log');

$node->stop;
done_testing();
