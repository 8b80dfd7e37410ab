# 008_security.pl: the delivery workers under attack (DESIGN.md section 5),
# each section written as the attack of the security review.
#
#  1. the workers run as novu_worker, never as a superuser
#  2. the database owner plants public operators with the exact argument types
#     of the workers' arithmetic and points the database's search_path at
#     them: no worker ever runs them
#  3. one huge trigger cannot stop delivery: oversized inputs are refused,
#     the largest allowed ones to a subscriber with 100 devices leave the
#     worker's memory bounded, and an unrelated trigger is delivered meanwhile
#  4. an error while recording answers does not drop them: nothing is sent twice
#  5. a message whose lease expired at novu.max_attempts fails, it is not sent again
#  6. a template that would render for minutes stops at the work limit: that
#     message fails with the reason, the others of its batch are delivered
#  7. the database's settings for its applications (read-only transactions,
#     statement, lock and idle timeouts) do not stop the workers
#  8. a cancel while a worker waits for an OAuth token (for a new batch, or
#     after a 401): no crash, and the messages it held are recorded at once
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use NovuTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use JSON::PP;

my $mocks = NovuTest::start_mocks();
my $node = NovuTest::new_node('security', $mocks, 'novu.max_attempts' => 3);
NovuTest::create_integrations($node, $mocks);

$node->safe_psql('postgres', <<'SQL');
SELECT novu.create_workflow('ping', '[{"type": "push", "title": "Ping {{payload.n}}", "content": "hi"}]');
SELECT novu.identify('bystander', '{"channels": [{"providerId": "fcm", "credentials": {"deviceTokens": ["fcm-bystander"]}}]}');
SQL

# the worker pids (waits until novu.workers of them run)
sub worker_pids
{
	NovuTest::wait_for($node,
		q{SELECT count(*) = current_setting('novu.workers')::int FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
	return split /\n/, NovuTest::query($node,
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'novu delivery worker' ORDER BY pid});
}

# Trigger 'ping' to the bystander and wait until it is sent; returns the seconds it took.
my $pings = 0;
sub ping_bystander
{
	my $tx = 'ping-' . ++$pings;
	my $t0 = time();
	NovuTest::query($node, qq{SELECT novu.trigger('ping', '"bystander"', '{"n": $pings}', '{}', '$tx')});
	return NovuTest::wait_for($node,
		qq{SELECT count(*) = 1 FROM novu.messages WHERE transaction_id = '$tx' AND status = 'sent'}, 30)
	  ? time() - $t0 : undef;
}

######################################################################
# 1. the workers' role

my @pids = worker_pids();
ok(@pids >= 1, 'delivery workers run');
is(NovuTest::query($node, q{SELECT string_agg(DISTINCT a.usename || ':' || r.rolsuper, ',')
    FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
   WHERE a.backend_type = 'novu delivery worker'}),
	'novu_worker:false', 'the workers are connected as novu_worker, which is no superuser');
ok(defined ping_bystander(), 'novu_worker delivers');

# a superuser novu_worker is refused: the launcher stops the workers
$node->safe_psql('postgres', 'ALTER ROLE novu_worker SUPERUSER');
ok(NovuTest::wait_for($node,
	q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}, 30),
	'workers stop when novu_worker is made a superuser');
$node->safe_psql('postgres', 'ALTER ROLE novu_worker NOSUPERUSER');
@pids = worker_pids();
ok(defined ping_bystander(), 'and deliver again once it is not');
like(slurp_file($node->logfile), qr/role "novu_worker" is a superuser; the delivery workers never run as one/,
	'the log says why delivery stopped');

######################################################################
# 2. the database owner's operators

$node->safe_psql('postgres', <<'SQL');
CREATE ROLE dbo LOGIN;
ALTER DATABASE postgres OWNER TO dbo;
SET ROLE dbo;
CREATE TABLE public.tripwire (who text, super boolean);
GRANT INSERT ON public.tripwire TO PUBLIC;
CREATE FUNCTION public.trip() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.tripwire SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
    BEGIN
        EXECUTE 'ALTER ROLE dbo SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END
$$;
-- numeric * integer and integer * interval have no exact built-in match, so an
-- exact match in a schema on the search_path wins over pg_catalog's
CREATE FUNCTION public.num_times_int(numeric, integer) RETURNS numeric LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.trip(); RETURN $1 OPERATOR(pg_catalog.*) $2::numeric; END $$;
CREATE OPERATOR public.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.num_times_int);
CREATE FUNCTION public.int_times_interval(integer, interval) RETURNS interval LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.trip(); RETURN $1::float8 OPERATOR(pg_catalog.*) $2; END $$;
CREATE OPERATOR public.* (LEFTARG = integer, RIGHTARG = interval, FUNCTION = public.int_times_interval);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.trip(); RETURN pg_catalog.now(); END $$;
ALTER DATABASE postgres SET search_path = public, pg_catalog;
RESET ROLE;
SQL
# the workers reconnect under the database's new settings (this test's own
# sessions now resolve now() to public.now(): they say pg_catalog.now())
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
ok(NovuTest::wait_for($node,
	q{SELECT count(*) > 0 AND bool_and(backend_start > pg_catalog.now() - interval '30 s') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}),
	'the workers reconnected');
# deliveries, retries and idle cycles run every statement of the workers
NovuTest::set_tokens($mocks, 'fcm', 'fail:503:0:1', 'fcm-bystander');
ok(defined ping_bystander(), 'delivery (with a retry) works under the owner\'s search_path');
ok(defined ping_bystander(), 'and again after idle cycles');
is(NovuTest::query($node, 'SELECT count(*) FROM public.tripwire'), '0', 'no worker statement ran the owner\'s operators or functions');
is(NovuTest::query($node, q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f', 'the database owner is no superuser');
$node->safe_psql('postgres', q{ALTER DATABASE postgres RESET search_path});

######################################################################
# 3. one huge trigger cannot stop delivery

my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT novu.trigger('ping', '"bystander"', '{}', jsonb_build_object('fcm', jsonb_build_object('data', jsonb_build_object('x', repeat('a', 20000000)))))});
like($err, qr/overrides is too large/, 'a 20 MB overrides is refused');

my @tokens = map { sprintf('%064x', $_ + 0xabc000) } 1 .. 100;
$node->safe_psql('postgres', sprintf(q{SELECT novu.identify('crowd', jsonb_build_object('channels', jsonb_build_array(
    jsonb_build_object('providerId', 'apns', 'credentials', jsonb_build_object('deviceTokens', '%s'::jsonb)))))},
	'[' . join(',', map { qq{"$_"} } @tokens) . ']'));
my $rss_before = 0;
for my $pid (worker_pids())
{
	my $rss = `awk '/RssAnon/ {print \$2}' /proc/$pid/status 2>/dev/null`;
	chomp $rss;
	$rss_before = $rss if $rss && $rss > $rss_before;
}
# 20 triggers, each with the largest payload and overrides allowed, to 100 devices
$node->safe_psql('postgres', q{SELECT count(novu.trigger('ping', '"crowd"',
    jsonb_build_object('n', i, 'blob', repeat('p', 260000)),
    jsonb_build_object('apns', jsonb_build_object('blob', repeat('o', 64000)))))
  FROM generate_series(1, 20) i});
my $bystander_s = ping_bystander();
ok(defined $bystander_s && $bystander_s < 15, sprintf('an unrelated trigger is delivered meanwhile (%.1f s)', $bystander_s // -1));
my $peak = 0;
my $deadline = time() + 120;
while (time() < $deadline)
{
	for my $pid (worker_pids())
	{
		my $rss = `awk '/RssAnon/ {print \$2}' /proc/$pid/status 2>/dev/null`;
		chomp $rss;
		$peak = $rss if $rss && $rss > $peak;
	}
	last if NovuTest::query($node,
		q{SELECT count(*) = 2000 FROM novu.messages WHERE subscriber_id = 'crowd' AND status IN ('sent', 'failed')}) eq 't';
	usleep(20_000);
}
is(NovuTest::query($node, q{SELECT string_agg(s || ':' || n, ',') FROM (SELECT status || ':' || (last_error LIKE 'PayloadTooLarge%') AS s,
    count(*) AS n FROM novu.messages WHERE subscriber_id = 'crowd' GROUP BY 1) x}),
	'failed:true:2000', 'the 2,000 oversized APNs messages fail alone (PayloadTooLarge), none is sent');
diag(sprintf('worker RssAnon: %.1f MB before, peak %.1f MB while 2,000 messages of 324 KB of event data each were handled',
	$rss_before / 1024, $peak / 1024));
ok($peak > 0 && $peak < 150 * 1024, 'a worker\'s memory stays bounded (peak RssAnon under 150 MB)');

######################################################################
# 4. an error while recording does not drop the answers
#
# A fault injected into the table the results go to (sequences are not
# transactional, so the first two recording transactions fail and later ones
# do not): the answers stay with the worker and are recorded later, and no
# message is sent a second time.

NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', <<'SQL');
CREATE SEQUENCE public.fault_seq;
GRANT USAGE ON SEQUENCE public.fault_seq TO PUBLIC;
CREATE FUNCTION public.record_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'sent' AND OLD.status = 'sending' AND pg_catalog.nextval('public.fault_seq') <= 2 THEN
        RAISE EXCEPTION 'injected fault while recording';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER record_fault BEFORE UPDATE ON novu.deliveries FOR EACH ROW EXECUTE FUNCTION public.record_fault();
SELECT novu.identify('rec-' || i, jsonb_build_object('channels', jsonb_build_array(jsonb_build_object(
    'providerId', 'fcm', 'credentials', jsonb_build_object('deviceTokens', jsonb_build_array('fcm-rec-' || i))))))
  FROM generate_series(1, 20) i;
SQL
$node->safe_psql('postgres',
	q{SELECT count(novu.trigger('ping', to_jsonb('rec-' || i), '{"n": 1}', '{}', 'rec-tx-' || i)) FROM generate_series(1, 20) i});
ok(NovuTest::wait_for($node,
	q{SELECT count(*) = 20 FROM novu.messages WHERE transaction_id LIKE 'rec-tx-%' AND status = 'sent'}, 20),
	'all messages end sent soon after two failed recording transactions (not after their leases expire)');
is(NovuTest::query($node, q{SELECT pg_catalog.nextval('public.fault_seq') > 3}), 't', 'the fault was hit');
my $accepted = NovuTest::accepted($mocks, 'fcm');
is(scalar(grep { /^fcm-rec-/ } keys %$accepted), 20, 'every token received its message');
is(scalar(grep { /^fcm-rec-/ && $accepted->{$_} != 1 } keys %$accepted), 0, 'and exactly once: no answer was dropped');
is(NovuTest::query($node, q{SELECT max(attempts) FROM novu.messages WHERE transaction_id LIKE 'rec-tx-%'}), '1',
	'one attempt each');
like(slurp_file($node->logfile), qr/injected fault while recording/, 'the error was logged');
$node->safe_psql('postgres', 'DROP TRIGGER record_fault ON novu.deliveries');

######################################################################
# 5. a lease that expired at max_attempts fails the message instead of sending it again

NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', <<'SQL');
-- a message whose worker died during its third (last) attempt
INSERT INTO novu.deliveries (transaction_id, workflow_id, subscriber_id, step_index, channel, integration_id,
                             provider_id, integration_identifier, device_token, status, attempts,
                             lease_until, claimed_by)
SELECT 'lease-tx', 'ping', 'bystander', 0, 'push', id, 'fcm', identifier, 'fcm-lease', 'sending', 3,
       now() - interval '1 second', 0
  FROM novu.integrations WHERE identifier = 'fcm-mock';
SQL
ok(NovuTest::wait_for($node, q{SELECT status = 'failed' FROM novu.messages WHERE transaction_id = 'lease-tx'}, 30),
	'the expired lease at max_attempts fails the message');
like(NovuTest::query($node, q{SELECT last_error FROM novu.messages WHERE transaction_id = 'lease-tx'}),
	qr/^no answer after 3 attempts/, 'with the reason');
is(NovuTest::query($node, q{SELECT attempts FROM novu.messages WHERE transaction_id = 'lease-tx'}), '3',
	'no fourth attempt');
is(scalar @{ NovuTest::control($mocks, 'GET', '/requests?provider=fcm&token=fcm-lease')->{requests} }, 0,
	'the provider never received it again');
like(NovuTest::query($node, q{SELECT string_agg(detail, '|') FROM novu.execution_details WHERE transaction_id = 'lease-tx'}),
	qr/Failed after 3 attempts: no answer/, 'the activity log says so');

######################################################################
# 6. one message whose rendering exceeds the template engine's budget

NovuTest::reset_mocks($mocks);
$node->safe_psql('postgres', q{SELECT novu.create_workflow('heavy', '[{"type": "push", "title": "t",
    "content": "{% for i in payload.a %}{% for j in payload.a %}{% if payload.s | upcase %}{% endif %}{% endfor %}{% endfor %}"}]')});
my $t6 = time();
$node->safe_psql('postgres', q{
SELECT novu.trigger('heavy', '"bystander"', jsonb_build_object('a', (SELECT jsonb_agg(i) FROM generate_series(1, 300) i),
                                                            's', repeat('x', 10000)), '{}', 'heavy-tx');
SELECT novu.trigger('heavy', '"bystander"', jsonb_build_object('a', '[1, 2]', 's', 'light'), '{}', 'light-tx');});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.messages WHERE transaction_id IN ('heavy-tx', 'light-tx')
    AND status IN ('sent', 'failed')}, 30), 'both messages end');
diag(sprintf('heavy template handled in %.2f s', time() - $t6));
like(NovuTest::query($node, q{SELECT status || ': ' || last_error FROM novu.messages WHERE transaction_id = 'heavy-tx'}),
	qr/^failed: Template error: .*render work limit exceeded/, 'the heavy one fails alone, with the reason');
is(NovuTest::query($node, q{SELECT status FROM novu.messages WHERE transaction_id = 'light-tx'}), 'sent',
	'the light one of the same batch is delivered');

######################################################################
# 7. settings of the database for its applications: with read-only
# transactions by default every claim would fail, and a statement or lock
# timeout would end fan-outs and claims part way, retried for ever;
# exit_on_error would turn the errors the workers catch (one bad message) into
# an exit, again at every start; standard_conforming_strings off would change
# what the workers' own SQL literals say.  The workers run with PostgreSQL's
# defaults for those.  (This test's own role keeps the defaults in this
# database: a role's setting wins.)  The database's owner, not a superuser,
# may set them all.

$node->safe_psql('postgres', q{SELECT novu.create_workflow('sched', '[{"type": "delay", "delayPath": "sendAt"},
    {"type": "push", "title": "t", "content": "c"}]')});
$node->safe_psql('postgres', q{
ALTER ROLE postgres IN DATABASE postgres SET default_transaction_read_only = off;
ALTER ROLE postgres IN DATABASE postgres SET statement_timeout = 0;
ALTER ROLE postgres IN DATABASE postgres SET lock_timeout = 0;
ALTER ROLE postgres IN DATABASE postgres SET idle_in_transaction_session_timeout = 0;
ALTER ROLE postgres IN DATABASE postgres SET exit_on_error = off;
ALTER ROLE postgres IN DATABASE postgres SET standard_conforming_strings = on;
SET ROLE dbo;
ALTER DATABASE postgres SET default_transaction_read_only = on;
ALTER DATABASE postgres SET statement_timeout = '1ms';
ALTER DATABASE postgres SET lock_timeout = '1ms';
ALTER DATABASE postgres SET idle_in_transaction_session_timeout = '1ms';
ALTER DATABASE postgres SET exit_on_error = on;
ALTER DATABASE postgres SET standard_conforming_strings = off;});
$node->safe_psql('postgres',
	q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'});
ok(NovuTest::wait_for($node,
	q{SELECT count(*) > 0 AND bool_and(backend_start > pg_catalog.now() - interval '30 s') FROM pg_stat_activity WHERE backend_type = 'novu delivery worker'}),
	'settings: the workers reconnected under the database\'s settings');
my @settings_pids = worker_pids();
is(NovuTest::query($node, q{SELECT current_setting('default_transaction_read_only') || ',' || current_setting('statement_timeout')}),
	'off,0', 'settings: this test\'s sessions keep the defaults');
NovuTest::set_tokens($mocks, 'fcm', 'fail:503:0:1', 'fcm-bystander');
ok(defined ping_bystander(), 'settings: delivery (with a retry) works in a read-only, 1 ms statement timeout database');
ok(defined ping_bystander(), 'settings: and again after idle cycles');
# a delay whose time does not parse raises inside the engine (caught there: that
# step fails alone); a good one is read with the standard meaning of '\d'
$node->safe_psql('postgres', q{
SELECT novu.trigger('sched', '"bystander"', '{"sendAt": "2099-13-45T00:00:00"}', '{}', 'sched-bad');
SELECT novu.trigger('sched', '"bystander"', '{"sendAt": "2099-01-01T00:00:00"}', '{}', 'sched-good');});
ok(NovuTest::wait_for($node, q{SELECT count(*) = 2 FROM novu.execution_details
    WHERE transaction_id IN ('sched-bad', 'sched-good') AND (detail LIKE 'Delay failed%' OR detail LIKE 'Step delayed until%')}, 30),
	'settings: both delays are handled');
like(NovuTest::query($node, q{SELECT string_agg(detail, '|') FROM novu.execution_details WHERE transaction_id = 'sched-bad'}),
	qr/Delay failed: payload.sendAt is not an ISO time/, 'settings: the bad time fails its own step');
like(NovuTest::query($node, q{SELECT string_agg(detail, '|') FROM novu.execution_details WHERE transaction_id = 'sched-good'}),
	qr/Step delayed until 2099-01-01T00:00:00/, 'settings: the good time is read as the ISO time it is');
ok(defined ping_bystander(), 'settings: and the others are still delivered');
is(join(',', sort(worker_pids())), join(',', sort(@settings_pids)), 'settings: no worker exited on the way');
$node->safe_psql('postgres', q{ALTER DATABASE postgres RESET ALL; ALTER ROLE postgres IN DATABASE postgres RESET ALL;});

######################################################################
# 8. a cancel (pg_cancel_backend: any member of pg_signal_backend) while a
# worker waits for a request it runs and waits for (FCM's OAuth token): the
# request is withdrawn with the error.  Its memory goes with the error; when
# its answer came later, the worker took it for a delivery's and crashed (a
# segfault restarts every backend of the cluster).  The message it was getting
# the token for is recorded as not sent at once (it waited for its lease).

# The token request answered 3 s later is the next one only (a counted state of
# the service account): the retries after the cancel get theirs at once,
# however long the test takes to see the first answer.
my $sa_email = JSON::PP::decode_json(slurp_file("$mocks->{dir}/fcm-service-account.json"))->{client_email};
NovuTest::set_tokens($mocks, 'oauth', 'slow:3000:1', $sa_email);
# new credentials: the integration is built again and fetches a token of its own
$node->safe_psql('postgres', q{SELECT novu.update_integration('fcm-mock', '{"name": "FCM, renamed"}')});
my @cancel_pids = worker_pids();

# Trigger 'ping' as $tx, wait until a worker asks the OAuth mock for a token
# (answered 3 s later), cancel the workers then, and wait until the mock
# answered the request withdrawn; returns whether it did.
sub cancel_in_token_wait
{
	my ($tx, $label, $asks) = @_;
	my $oauth = sub { NovuTest::control($mocks, 'GET', '/requests?provider=oauth')->{requests} };
	my $before = scalar @{ $oauth->() };
	NovuTest::query($node, qq{SELECT novu.trigger('ping', '"bystander"', '{"n": 900}', '{}', '$tx')});
	my $deadline = time() + 15;
	usleep(20_000) while time() < $deadline && scalar @{ $oauth->() } == $before;
	ok(scalar @{ $oauth->() } > $before, "$label: $asks");
	is(NovuTest::query($node, q{SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) > 0 FROM pg_stat_activity
	    WHERE backend_type = 'novu delivery worker'}), 't', "$label: the workers are sent a cancel while one waits");
	my $answered = sub { my $r = $oauth->(); return defined $r->[$before] && defined $r->[$before]{response}; };
	$deadline = time() + 15;
	usleep(50_000) while time() < $deadline && !$answered->();
	return $answered->();
}

# A notification's activity, oldest first, as one line.
sub activity
{
	my $detail = NovuTest::query($node,
		qq{SELECT string_agg(detail, ' | ' ORDER BY id) FROM novu.execution_details WHERE transaction_id = '$_[0]'});
	diag("$_[0]: $detail");
	return $detail;
}

# the answer comes 3 s after the request, to the request withdrawn
ok(cancel_in_token_wait('oauth-cancel', 'cancel', 'a worker asks the OAuth mock for a token (answered 3 s later)'),
	'cancel: the OAuth mock answered the token request after the cancel');
ok(defined ping_bystander(), 'cancel: delivery goes on after that answer came');
# the message the canceled worker had claimed and not sent is recorded so at
# once and retried, not left leased until its lease ends (5 x 3 s + 30 s here)
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'oauth-cancel'}, 20),
	'cancel: the message claimed when the cancel came is delivered (well before its lease ends)');
like(activity('oauth-cancel'), qr/^Retry 2 scheduled in [0-9.]+ s: not sent: the worker stopped with an error before sending it/,
	'cancel: its first attempt is recorded as not sent, with the reason');
is(join(',', sort(worker_pids())), join(',', sort(@cancel_pids)), 'cancel: no worker exited (no crash, no restart)');
unlike(PostgreSQL::Test::Utils::slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/,
	'cancel: the server log shows no crash');

# The same cancel while a worker renews the token after FCM answered a plain
# 401 (the answer asks for a new token and a resend): the answer is recorded
# as the retry it is, at once, not left leased until its lease ends.
NovuTest::set_tokens($mocks, 'oauth', 'slow:3000:1', $sa_email);
NovuTest::control($mocks, 'POST', '/config', { fcm => { unauthNext => 1 } });
cancel_in_token_wait('reauth-cancel', 'cancel in a renewal', 'FCM answered 401 and a worker asks for a new token');
ok(NovuTest::wait_for($node, q{SELECT status = 'sent' FROM novu.messages WHERE transaction_id = 'reauth-cancel'}, 20),
	'cancel in a renewal: the message is delivered (well before its lease ends)');
like(activity('reauth-cancel'), qr/^Retry 2 scheduled in [0-9.]+ s: .*\| Message sent$/,
	'cancel in a renewal: its 401 is recorded as a retry, then it is sent');
is(join(',', sort(worker_pids())), join(',', sort(@cancel_pids)), 'cancel in a renewal: no worker exited');

done_testing();
