/*
 * guc.c
 *		Configuration parameters of the novu extension (novu.*).
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "net/netpolicy.h"
#include "novu.h"

char	   *novu_database_name = NULL;
int			novu_workers = 2;
int			novu_batch_size = 500;
int			novu_poll_interval = 1000;
double		novu_worker_time_slice = 0.1;
int			novu_request_timeout = 10000;
bool		novu_durable_claims = false;
int			novu_max_attempts = 5;
int			novu_retry_initial_delay = 1000;
int			novu_retry_max_delay = 3600000;
int			novu_fanout_lock_wait = 100;
int			novu_integration_idle_timeout = 300000;
char	   *novu_ca_file = NULL;
int			novu_retention = 30 * 24 * 3600;
int			novu_expo_receipt_delay = 15 * 60 * 1000;
char	   *novu_secret_key_file = NULL;
char	   *novu_previous_secret_key_file = NULL;

/* Define every novu.* GUC; called once from _PG_init. */
void
novu_define_gucs(void)
{
	DefineCustomStringVariable("novu.database_name",
							   "Database whose outbox the delivery workers drain.",
							   NULL,
							   &novu_database_name,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("novu.workers",
							"Number of delivery worker processes.",
							NULL,
							&novu_workers,
							2, 0, 64,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.batch_size",
							"Messages claimed by a worker in one short transaction.",
							NULL,
							&novu_batch_size,
							500, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.poll_interval",
							"Safety-net poll interval of the delivery workers.",
							"Committed triggers wake a worker at once; the poll only catches rows written by other means.",
							&novu_poll_interval,
							1000, 10, 3600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomRealVariable("novu.worker_time_slice",
							 "CPU time slice the delivery workers ask the kernel for (0: its default).",
							 "A short slice lets a worker woken by a commit run at once (Linux 6.12 or later; older kernels ignore it).",
							 &novu_worker_time_slice,
							 0.1, 0, 100,
							 PGC_SIGHUP,
							 GUC_UNIT_MS,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("novu.request_timeout",
							"Timeout of one provider request.",
							"Counted from when the request is sent; a request that never gets a connection ends after as long, not sent.",
							&novu_request_timeout,
							10000, 100, 600000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("novu.durable_claims",
							 "Flush each claim to disk before its requests go out.",
							 "Off: the workers commit their claims asynchronously, and after a server crash a message claimed in the last moments may be sent again as its first attempt. On: no uncounted resend after any crash, for one WAL flush per claim.",
							 &novu_durable_claims,
							 false,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("novu.max_attempts",
							"Attempts of a message before it is marked failed.",
							NULL,
							&novu_max_attempts,
							5, 1, 100,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.retry_initial_delay",
							"First retry delay; later delays double, with jitter.",
							NULL,
							&novu_retry_initial_delay,
							1000, 1, 86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.retry_max_delay",
							"Upper bound of the retry delay.",
							NULL,
							&novu_retry_max_delay,
							3600000, 1, 86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.fanout_lock_wait",
							"How long a worker waits for another transaction creating a subscriber it names, or holding a digest window it reaches.",
							"Then that trigger or due step is set aside for 1 to 30 s and the worker goes on.",
							&novu_fanout_lock_wait,
							100, 1, 60000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.integration_idle_timeout",
							"How long a delivery worker keeps an integration it has not used.",
							"Then its connections and decrypted secrets are dropped (a deleted integration's too); the next message for it loads it again.",
							&novu_integration_idle_timeout,
							300000, 1000, 86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("novu.ca_file",
							   "PEM bundle of extra trusted CAs for provider connections.",
							   "The system trust store is always used as well.",
							   &novu_ca_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("novu.allowed_private_networks",
							   "Private networks the delivery workers may connect to (comma-separated CIDRs).",
							   "Loopback, private, link-local and other internal addresses are refused unless listed here.",
							   &novu_allowed_private_networks,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   netpolicy_check_networks, netpolicy_assign_networks, NULL);

	DefineCustomIntVariable("novu.retention",
							"Age after which finished messages, notifications and activity are deleted.",
							NULL,
							&novu_retention,
							30 * 24 * 3600, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("novu.expo_receipt_delay",
							"Delay before Expo receipts of accepted messages are fetched.",
							NULL,
							&novu_expo_receipt_delay,
							15 * 60 * 1000, 0, 86400000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/* secrets at rest (secrets.c): superuser-only, never shown to other roles */
	DefineCustomStringVariable("novu.secret_key_file",
							   "File holding the key that encrypts integration secrets.",
							   "64 hex characters (openssl rand -hex 32), owned by the server's OS user, mode 0600. "
							   "Without it, integrations cannot store secrets.",
							   &novu_secret_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("novu.previous_secret_key_file",
							   "File holding the key in use before the last rotation, accepted for decryption only.",
							   "Set it while novu.reencrypt_secrets() moves every secret to novu.secret_key_file, then empty it.",
							   &novu_previous_secret_key_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("novu");
#else
	EmitWarningsOnPlaceholders("novu");
#endif
}
