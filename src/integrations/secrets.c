/*
 * secrets.c
 *		Integration secrets at rest (DESIGN.md section 5): AES-256-GCM under a
 *		key that lives outside the database.
 *
 * Which credential fields are secrets each provider lists once, in its
 * ProviderOps.secrets; every other setting of an integration stays readable jsonb.  A
 * secret is stored in place of its clear value as the string
 *
 *		novu:v1:<key id>:<base64url(nonce || ciphertext || tag)>
 *
 * - K is the 256-bit key of novu.secret_key_file (64 hex characters);
 * - the AES-256-GCM key is HMAC-SHA-256(K, "novu secrets aes-256-gcm v1" 0x01)
 *   and the key id the first 8 bytes (16 hex characters) of
 *   HMAC-SHA-256(K, "novu secrets key id v1" 0x01): one HKDF-Expand block
 *   each (RFC 5869, K as the pseudorandom key).  The id names the key without
 *   revealing it, so rotation knows which key (current or previous) opens a
 *   secret;
 * - nonce: 12 fresh random bytes per encryption; tag: 16 bytes;
 * - associated data: "novu:v1" NUL key id NUL integration id (decimal) NUL
 *   provider_id NUL field path (e.g. "serviceAccount.private_key"): a
 *   ciphertext opens only in the row and the field it was made for, so one
 *   copied to another integration (or another field) fails to decrypt.
 *
 * Encryption happens in novu._seal_secrets(), the BEFORE INSERT OR UPDATE OF
 * id, provider_id, credentials trigger of novu.integrations: whatever writes a row
 * (create_integration, update_integration, a restore) stores no new clear
 * secret, and without a key file storing a secret is refused.  Clear values
 * left by an upgrade without a key stay until novu.reencrypt_secrets() runs.
 *
 * Decryption happens only in C: in the delivery worker when it loads an
 * integration into its cache (secrets_open_credentials), and inside
 * novu.reencrypt_secrets() (superuser only), which returns a count.  No
 * function returns a decrypted secret to SQL, and no message here contains a
 * secret or a key byte; buffers that held them are wiped (explicit_bzero).
 */
#include "postgres.h"

#ifndef OPENSSL_NO_DEPRECATED
#define OPENSSL_NO_DEPRECATED 1
#endif

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "crypto/crypto.h"
#include "novu.h"
#include "crypto/envelope.h"
#include "integrations/secrets.h"
#include "providers/provider.h"

PG_FUNCTION_INFO_V1(novu_seal_secrets);
PG_FUNCTION_INFO_V1(novu_mask_secrets);
PG_FUNCTION_INFO_V1(novu_reencrypt_secrets);
PG_FUNCTION_INFO_V1(novu_secrets_upgrade);

/*
 * The secrets of each provider: the one list.  object is the nested object
 * holding the field (NULL: top level); pair names a public setting that must
 * match the secret (a certificate, a public key): when it changes, the secret
 * must be given again, since a stored one is never decrypted to check it.
 *
 * fcm: only serviceAccount.private_key.  project_id, client_email,
 * private_key_id and token_uri are identifiers sent in clear in every OAuth
 * assertion (iss, kid) or public URLs; an admin needs to see which account an
 * integration uses.  apns: apiKey is the Key ID (sent in clear in the JWT
 * header) and the certificate is public; secretKey (.p8) and privateKey are
 * secret.
 */

#define KEY_FILE_MAX		1024	/* bytes read from a key file at most */
#define KEY_HEX_LEN			64
#define MASK				"********"

#define KEY_HINT \
	"Set novu.secret_key_file to a file made with openssl rand -hex 32, mode 0600, " \
	"owned by the server's OS user, then reload the configuration."

/* One key, as derived from a key file. */
typedef struct SecretKey
{
	unsigned char aes[CRYPTO_AES256_KEY_LEN];
	char		id[SECRETS_KEY_ID_LEN + 1];
} SecretKey;

/* Why a key cannot be used: for an ereport, or as a worker's reason. */
typedef struct KeyProblem
{
	int			sqlerrcode;
	char	   *message;
	char	   *detail;
	char	   *hint;
} KeyProblem;

/* A key setting and what its file gave. */
typedef struct KeySlot
{
	const char *setting;		/* "novu.secret_key_file" or "novu.previous_secret_key_file" */
	bool		configured;		/* the setting is not empty */
	bool		ok;				/* key holds the file's key */
	SecretKey	key;
	KeyProblem	problem;		/* when configured and not ok */
} KeySlot;

/* The current key (slot 0) and the previous one (slot 1), read once per operation. */
typedef struct KeyRing
{
	bool		loaded;
	KeySlot		slot[2];
} KeyRing;

typedef enum WalkMode
{
	WALK_SEAL,					/* the trigger: encrypt clear secrets */
	WALK_OPEN,					/* the worker: decrypt sealed secrets */
	WALK_ROTATE,				/* reencrypt_secrets: everything under the current key */
	WALK_MASK,					/* for display: every secret becomes ******** */
	WALK_COUNT					/* count clear secrets */
} WalkMode;

/* One pass over an integration's credentials. */
typedef struct SecretWalk
{
	WalkMode	mode;
	int64		id;
	const char *identifier;		/* for messages; may be NULL */
	const char *provider_id;
	Jsonb	   *old;			/* WALK_SEAL on UPDATE: the row's previous credentials */
	Jsonb	   *root;			/* the credentials walked */
	KeyRing    *ring;
	bool		changed;		/* a value was replaced */
	int			clear;			/* clear secrets seen */
	int			sealed;			/* sealed secrets seen */
	char	   *error;			/* WALK_OPEN: the first failure */
	List	   *wipe;			/* buffers holding secrets, wiped when the walk ends */
} SecretWalk;

static void keyring_load(KeyRing *ring);

/* reencrypt_secrets is rewriting the table: its new sealed values pass the trigger */
static bool reencrypting = false;

/* The secret fields of a provider (its ProviderOps.secrets), or NULL. */
static const SecretField *
provider_secrets(const char *provider_id)
{
	const ProviderOps *ops = novu_provider_lookup(provider_id);

	return ops ? ops->secrets : NULL;
}

/* The secret field of a provider named key inside object (NULL: top level), or NULL. */
static const SecretField *
secret_field(const char *provider_id, const char *object, const char *key)
{
	const SecretField *f;

	for (f = provider_secrets(provider_id); f != NULL && f->key != NULL; f++)
	{
		if (strcmp(f->key, key) == 0 &&
			((f->object == NULL && object == NULL) ||
			 (f->object != NULL && object != NULL && strcmp(f->object, object) == 0)))
			return f;
	}
	return NULL;
}

/* True if key (top level) is an object holding secrets of the provider. */
static bool
secret_object(const char *provider_id, const char *key)
{
	const SecretField *f;

	for (f = provider_secrets(provider_id); f != NULL && f->key != NULL; f++)
		if (f->object != NULL && strcmp(f->object, key) == 0)
			return true;
	return false;
}

/* True if the provider has any secret field. */
static bool
provider_has_secrets(const char *provider_id)
{
	const SecretField *f = provider_secrets(provider_id);

	return f != NULL && f->key != NULL;
}

/* The field's name in messages and in the associated data, e.g. "serviceAccount.private_key". */
static char *
field_path(const SecretField *f)
{
	return f->object ? psprintf("%s.%s", f->object, f->key) : pstrdup(f->key);
}

/* Remember a buffer that held a secret, to wipe when the walk ends. */
static void
walk_wipe_later(SecretWalk *w, char *buf)
{
	w->wipe = lappend(w->wipe, buf);
}

/* Wipe every remembered buffer. */
static void
walk_wipe(SecretWalk *w)
{
	ListCell   *lc;

	foreach(lc, w->wipe)
	{
		char	   *buf = lfirst(lc);

		explicit_bzero(buf, strlen(buf));
	}
	list_free(w->wipe);
	w->wipe = NIL;
}

/* ---------------------------------------------------------------------------
 * Key files
 * ---------------------------------------------------------------------------
 */

/* Fill a problem with a palloc'd message, detail and hint. */
static void
problem_set(KeyProblem *p, int sqlerrcode, char *message, char *detail, char *hint)
{
	p->sqlerrcode = sqlerrcode;
	p->message = message;
	p->detail = detail;
	p->hint = hint;
}

/* Raise a key problem as an ERROR. */
static void
problem_raise(KeyProblem *p)
{
	ereport(ERROR,
			(errcode(p->sqlerrcode),
			 errmsg_internal("%s", p->message),
			 p->detail ? errdetail_internal("%s", p->detail) : 0,
			 p->hint ? errhint("%s", p->hint) : 0));
}

/* A key problem as one line for the worker: message and hint. */
static char *
problem_text(KeyProblem *p)
{
	return p->hint ? psprintf("%s (%s)", p->message, p->hint) : pstrdup(p->message);
}

/* The value of a hex digit, or -1. */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Read the key file of a setting: a regular file owned by the server's OS
 * user with no group or other permission bits, holding 64 hex characters
 * (surrounding whitespace ignored).  Derives the AES key and the key id into
 * *key; false with *problem set otherwise.  Never raises, never puts a byte
 * of the file into a message.
 */
static bool
key_read(const char *setting, const char *path, SecretKey *key, KeyProblem *problem)
{
	static const char aes_info[] = "novu secrets aes-256-gcm v1\001";
	static const char id_info[] = "novu secrets key id v1\001";
	static const char hex[] = "0123456789abcdef";
	char		buf[KEY_FILE_MAX + 1];
	unsigned char raw[KEY_HEX_LEN / 2];
	unsigned char mac[CRYPTO_SHA256_LEN];
	struct stat st;
	size_t		len = 0;
	size_t		i;
	size_t		start;
	size_t		end;
	int			fd;
	bool		ok = false;
	char	   *make_hint = psprintf("Make it with: umask 077; openssl rand -hex 32 > \"%s\"", path);

	fd = open(path, O_RDONLY | O_CLOEXEC | PG_BINARY, 0);
	if (fd < 0)
	{
		int			save_errno = errno;

		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("could not open %s \"%s\": %s", setting, path, strerror(save_errno)),
					NULL, save_errno == ENOENT ? make_hint : NULL);
		return false;
	}
	if (fstat(fd, &st) != 0)
	{
		int			save_errno = errno;

		close(fd);
		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("could not stat %s \"%s\": %s", setting, path, strerror(save_errno)),
					NULL, NULL);
		return false;
	}
	if (!S_ISREG(st.st_mode))
	{
		close(fd);
		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("%s \"%s\" is not a regular file", setting, path),
					NULL, make_hint);
		return false;
	}
	if (st.st_uid != geteuid())
	{
		close(fd);
		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("%s \"%s\" is not owned by the server's OS user", setting, path),
					psprintf("It is owned by uid %u; the server runs as uid %u.",
							 (unsigned int) st.st_uid, (unsigned int) geteuid()),
					pstrdup("Give it to the server's OS user (the owner of the data directory) with chown."));
		return false;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("%s \"%s\" has group or world access", setting, path),
					psprintf("Its permissions are %04o; the key must be readable by the server's OS user only.",
							 (unsigned int) (st.st_mode & 07777)),
					psprintf("Run chmod 0600 \"%s\".", path));
		return false;
	}

	for (;;)
	{
		ssize_t		n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			int			save_errno = errno;

			close(fd);
			explicit_bzero(buf, sizeof(buf));
			problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
						psprintf("could not read %s \"%s\": %s", setting, path, strerror(save_errno)),
						NULL, NULL);
			return false;
		}
		if (n == 0)
			break;
		len += (size_t) n;
		if (len == sizeof(buf))
			break;
	}
	close(fd);

	/* whitespace, exactly 64 hex digits, whitespace */
	for (start = 0; start < len && isspace((unsigned char) buf[start]); start++)
		;
	for (end = len; end > start && isspace((unsigned char) buf[end - 1]); end--)
		;
	if (len <= KEY_FILE_MAX && end - start == KEY_HEX_LEN)
	{
		ok = true;
		for (i = 0; i < KEY_HEX_LEN / 2; i++)
		{
			int			hi = hex_value(buf[start + 2 * i]);
			int			lo = hex_value(buf[start + 2 * i + 1]);

			if (hi < 0 || lo < 0)
			{
				ok = false;
				break;
			}
			raw[i] = (unsigned char) (hi << 4 | lo);
		}
	}
	explicit_bzero(buf, sizeof(buf));
	if (!ok)
	{
		explicit_bzero(raw, sizeof(raw));
		problem_set(problem, ERRCODE_CONFIG_FILE_ERROR,
					psprintf("%s \"%s\" does not hold a 256-bit key", setting, path),
					pstrdup("The file must hold exactly 64 hexadecimal characters; surrounding whitespace is ignored."),
					make_hint);
		return false;
	}

	ok = crypto_hmac_sha256(raw, sizeof(raw), (const unsigned char *) aes_info, strlen(aes_info), key->aes) &&
		crypto_hmac_sha256(raw, sizeof(raw), (const unsigned char *) id_info, strlen(id_info), mac);
	explicit_bzero(raw, sizeof(raw));
	if (!ok)
	{
		explicit_bzero(key, sizeof(SecretKey));
		problem_set(problem, ERRCODE_INTERNAL_ERROR,
					psprintf("could not derive the key of %s: HMAC-SHA-256 failed", setting), NULL, NULL);
		return false;
	}
	for (i = 0; i < SECRETS_KEY_ID_LEN / 2; i++)
	{
		key->id[2 * i] = hex[mac[i] >> 4];
		key->id[2 * i + 1] = hex[mac[i] & 0x0F];
	}
	key->id[SECRETS_KEY_ID_LEN] = '\0';
	explicit_bzero(mac, sizeof(mac));
	return true;
}

/* Read the configured key files into the ring (once). */
static void
keyring_load(KeyRing *ring)
{
	const char *paths[2];
	int			i;

	if (ring->loaded)
		return;
	paths[0] = novu_secret_key_file ? novu_secret_key_file : "";
	paths[1] = novu_previous_secret_key_file ? novu_previous_secret_key_file : "";
	for (i = 0; i < 2; i++)
	{
		KeySlot    *s = &ring->slot[i];

		s->setting = i == 0 ? "novu.secret_key_file" : "novu.previous_secret_key_file";
		s->configured = paths[i][0] != '\0';
		s->ok = s->configured && key_read(s->setting, paths[i], &s->key, &s->problem);
	}
	ring->loaded = true;
}

/* Wipe the keys of a ring. */
static void
keyring_clear(KeyRing *ring)
{
	explicit_bzero(ring->slot, sizeof(ring->slot));
	ring->loaded = false;
}

/*
 * The current key, or false with *problem set: not configured (55000, with
 * the hint to make one), or its file's problem.
 */
static bool
keyring_current(KeyRing *ring, SecretKey **key, KeyProblem *problem)
{
	KeySlot    *s;

	keyring_load(ring);
	s = &ring->slot[0];
	if (s->ok)
	{
		*key = &s->key;
		return true;
	}
	if (!s->configured)
		problem_set(problem, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
					pstrdup("no key to encrypt integration secrets: novu.secret_key_file is not set"),
					pstrdup("Integration secrets are stored encrypted (AES-256-GCM) under a key kept outside the database."),
					pstrdup(KEY_HINT));
	else
		*problem = s->problem;
	return false;
}

/*
 * The key with this id (current or previous), or false with *problem set:
 * a configured key file that cannot be read (it may be the one), or neither
 * key has this id.
 */
static bool
keyring_find(KeyRing *ring, const char *id, const char *what, SecretKey **key, KeyProblem *problem)
{
	int			i;

	keyring_load(ring);
	for (i = 0; i < 2; i++)
	{
		if (ring->slot[i].ok && strcmp(ring->slot[i].key.id, id) == 0)
		{
			*key = &ring->slot[i].key;
			return true;
		}
	}
	for (i = 0; i < 2; i++)
	{
		if (ring->slot[i].configured && !ring->slot[i].ok)
		{
			*problem = ring->slot[i].problem;
			return false;
		}
	}
	problem_set(problem, ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
				psprintf("%s was encrypted with key %s, which is neither the key of novu.secret_key_file%s%s%s nor of novu.previous_secret_key_file%s",
						 what, id,
						 ring->slot[0].ok ? " (" : "",
						 ring->slot[0].ok ? ring->slot[0].key.id : "",
						 ring->slot[0].ok ? ")" : (ring->slot[0].configured ? "" : " (not set)"),
						 ring->slot[1].configured ? "" : " (not set)"),
				NULL,
				pstrdup("Set novu.previous_secret_key_file to the key file it was encrypted with, "
						"or give the secret again with novu.update_integration()."));
	return false;
}

/* ---------------------------------------------------------------------------
 * The envelope
 * ---------------------------------------------------------------------------
 */

/* The associated data binding a ciphertext to its key, integration and field. */
static StringInfo
envelope_aad(const char *kid, int64 id, const char *provider_id, const SecretField *f)
{
	StringInfo	aad = makeStringInfo();
	char	   *path = field_path(f);

	appendStringInfoString(aad, "novu:v1");
	appendStringInfoChar(aad, '\0');
	appendStringInfoString(aad, kid);
	appendStringInfoChar(aad, '\0');
	appendStringInfo(aad, INT64_FORMAT, id);
	appendStringInfoChar(aad, '\0');
	appendStringInfoString(aad, provider_id);
	appendStringInfoChar(aad, '\0');
	appendStringInfoString(aad, path);
	return aad;
}

/* Encrypt a clear secret of field f of the walk's integration under key; raises on an OpenSSL failure. */
static char *
envelope_seal(SecretWalk *w, const SecretField *f, SecretKey *key, const char *clear)
{
	unsigned char nonce[CRYPTO_GCM_NONCE_LEN];
	unsigned char *ct;
	unsigned char *blob;
	size_t		ctlen = 0;
	char	   *err = NULL;
	StringInfo	aad = envelope_aad(key->id, w->id, w->provider_id, f);
	char	   *result;

	if (!crypto_random_bytes(nonce, sizeof(nonce), &err))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt an integration secret: %s", err)));
	ct = crypto_aes256gcm_encrypt(key->aes, nonce, (unsigned char *) aad->data, aad->len,
								  (const unsigned char *) clear, strlen(clear), &ctlen, &err);
	if (ct == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not encrypt an integration secret: %s", err)));
	blob = palloc(sizeof(nonce) + ctlen);
	memcpy(blob, nonce, sizeof(nonce));
	memcpy(blob + sizeof(nonce), ct, ctlen);
	result = psprintf("%s%s:%s", SECRETS_PREFIX, key->id, base64url_encode(blob, sizeof(nonce) + ctlen));
	pfree(ct);
	pfree(blob);
	return result;
}

/*
 * Decrypt the envelope of field f of the walk's integration: the clear secret
 * (palloc'd, remembered for wiping), or NULL with *problem set.  Never raises
 * for a bad key or ciphertext.
 */
static char *
envelope_open(SecretWalk *w, const SecretField *f, const char *value, KeyProblem *problem)
{
	char		kid[SECRETS_KEY_ID_LEN + 1];
	unsigned char *blob = NULL;
	size_t		bloblen = 0;
	SecretKey  *key = NULL;
	StringInfo	aad;
	unsigned char *clear;
	size_t		clearlen = 0;
	char	   *path = field_path(f);
	char	   *what;

	if (!secrets_envelope_parse(value, kid, &blob, &bloblen))
	{
		problem_set(problem, ERRCODE_DATA_CORRUPTED,
					psprintf("secret %s is not a valid novu:v1 envelope", path), NULL, NULL);
		return NULL;
	}
	what = w->identifier ? psprintf("secret %s of integration \"%s\"", path, w->identifier)
		: psprintf("secret %s", path);
	if (!keyring_find(w->ring, kid, what, &key, problem))
		return NULL;
	aad = envelope_aad(kid, w->id, w->provider_id, f);
	clear = crypto_aes256gcm_decrypt(key->aes, blob, (unsigned char *) aad->data, aad->len,
									 blob + CRYPTO_GCM_NONCE_LEN, bloblen - CRYPTO_GCM_NONCE_LEN,
									 &clearlen, NULL);
	if (clear == NULL)
	{
		problem_set(problem, ERRCODE_DATA_CORRUPTED,
					psprintf("%s does not decrypt with key %s", what, kid),
					pstrdup("AES-256-GCM authentication failed: the ciphertext was altered, or copied from another integration or field."),
					pstrdup("Give the secret again with novu.update_integration()."));
		return NULL;
	}
	if (strlen((char *) clear) != clearlen)
	{
		explicit_bzero(clear, clearlen);
		problem_set(problem, ERRCODE_DATA_CORRUPTED,
					psprintf("%s decrypts to a value with a NUL byte", what), NULL, NULL);
		return NULL;
	}
	walk_wipe_later(w, (char *) clear);
	return (char *) clear;
}

/* ---------------------------------------------------------------------------
 * Walking the credentials
 * ---------------------------------------------------------------------------
 */

/* A string field of the credentials (inside object, or top level), or NULL. */
static char *
credentials_string(Jsonb *credentials, const char *object, const char *key)
{
	JsonbValue *v;
	JsonbContainer *c;

	if (credentials == NULL || !JB_ROOT_IS_OBJECT(credentials) || JB_ROOT_IS_SCALAR(credentials))
		return NULL;
	c = &credentials->root;
	if (object != NULL)
	{
		v = getKeyJsonValueFromContainer(c, object, strlen(object), NULL);
		if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			return NULL;
		c = v->val.binary.data;
	}
	v = getKeyJsonValueFromContainer(c, key, strlen(key), NULL);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* True if two strings are both NULL or equal. */
static bool
same_string(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * The credentials that say where an integration's requests go: the
 * provider's endpoint, a push webhook's URL.  A stored secret, or what it
 * makes (an OAuth access token, a provider JWT, an API key sent as a bearer
 * token), goes there; were it kept when that changes, an admin could send it
 * to a host of their own and read it there, though it is never read back.
 */
typedef struct RouteKey
{
	const char *object;			/* the object holding it, NULL: the top level */
	const char *key;
	const char *path;			/* as messages name it */
} RouteKey;

static const RouteKey route_keys[] = {
	{NULL, "endpoint", "endpoint"},
	{NULL, "webhookUrl", "webhookUrl"},
	/* FCM: receives the JWT assertion the service account's private key signs */
	{"serviceAccount", "token_uri", "serviceAccount.token_uri"},
	{NULL, NULL, NULL}
};

/*
 * A stored secret is kept by an update (given sealed, or as the mask): its
 * pair (a certificate, a public key) and the integration's route must be
 * the ones it was given with.
 */
static void
check_kept_secret(SecretWalk *w, const SecretField *f, JsonbContainer *parent)
{
	int			i;

	if (w->old == NULL)
		return;
	if (f->pair != NULL)
	{
		JsonbValue *pv = getKeyJsonValueFromContainer(parent, f->pair, strlen(f->pair), NULL);
		char	   *new_pair = pv && pv->type == jbvString ? pnstrdup(pv->val.string.val, pv->val.string.len) : NULL;
		char	   *old_pair = credentials_string(w->old, f->object, f->pair);

		if (!same_string(new_pair, old_pair))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid credentials for provider \"%s\": %s changed but %s was not given",
							w->provider_id, f->pair, f->key),
					 errdetail("The stored %s is encrypted and is never read back, so it cannot be checked against the new %s.",
							   f->key, f->pair),
					 errhint("Give %s and %s together.", f->pair, f->key)));
	}
	for (i = 0; route_keys[i].key != NULL; i++)
	{
		const RouteKey *r = &route_keys[i];

		if (!same_string(credentials_string(w->root, r->object, r->key),
						 credentials_string(w->old, r->object, r->key)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid credentials for provider \"%s\": %s changed but %s was not given",
							w->provider_id, r->path, field_path(f)),
					 errdetail("A stored secret goes only where it was given for: it is encrypted and never read back, and the new %s would receive it or what it signs.",
							   r->path),
					 errhint("Give %s and %s together.", r->path, field_path(f))));
	}
}

/*
 * WALK_SEAL of one secret: a sealed value stays (check_kept_secret); a clear
 * one is encrypted under the current key.  Without a usable key a new clear
 * secret is refused, while a clear one the row already held (left by an
 * upgrade without a key) may stay.
 *
 * An update may give a sealed value only as the one the row holds now.  Any
 * sealed text of this row's field decrypts (it is bound to the row, not to the
 * route), and novu_admin reads the table: an older one (from before a route
 * change, a dump, a backup) given back after the route changed, or after the
 * secret was removed, would send the secret to the new route.
 * reencrypt_secrets writes new sealed values (reencrypting).
 */
static char *
visit_seal(SecretWalk *w, const SecretField *f, JsonbContainer *parent, const char *value)
{
	SecretKey  *key = NULL;
	KeyProblem	problem;
	char	   *old_value;

	old_value = credentials_string(w->old, f->object, f->key);
	if (secrets_is_sealed(value))
	{
		w->sealed++;
		if (w->old != NULL && !reencrypting && !same_string(value, old_value))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid credentials for provider \"%s\": %s is an encrypted value this integration does not hold",
							w->provider_id, field_path(f)),
					 errdetail("An encrypted secret is kept only as the value stored now; another one (older, or of a removed secret) is not accepted."),
					 errhint("Give the secret itself, or " MASK " to keep the stored one.")));
		check_kept_secret(w, f, parent);
		return NULL;
	}

	/*
	 * The mask list_integrations shows, given back (an admin tool that reads,
	 * edits and writes the whole object): the stored secret stays.  It is
	 * never stored as a secret itself.
	 */
	if (strcmp(value, MASK) == 0)
	{
		if (old_value != NULL && strcmp(old_value, MASK) != 0)
		{
			check_kept_secret(w, f, parent);
			return old_value;
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid credentials for provider \"%s\": %s is the mask " MASK ", not a secret",
						w->provider_id, field_path(f)),
				 errdetail("Integrations show their secrets masked; there is no stored %s to keep.", field_path(f)),
				 errhint("Give the secret itself.")));
	}

	w->clear++;
	if (!keyring_current(w->ring, &key, &problem))
	{
		bool		kept = old_value != NULL && strcmp(old_value, value) == 0;

		if (kept && problem.sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
			return NULL;		/* a clear secret from before 0.4.0, no key yet */
		if (problem.sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		{
			char	   *path = field_path(f);

			ereport(ERROR,
					(errcode(problem.sqlerrcode),
					 errmsg("cannot store secret %s of integration \"%s\": no encryption key is configured",
							path, w->identifier ? w->identifier : "?"),
					 errdetail("Integration secrets are stored encrypted (AES-256-GCM) under the key in the file named by novu.secret_key_file, which is not set."),
					 errhint("%s", KEY_HINT)));
		}
		problem_raise(&problem);
	}
	return envelope_seal(w, f, key, value);
}

/* WALK_OPEN of one secret: a sealed value is decrypted, a clear one stays. */
static char *
visit_open(SecretWalk *w, const SecretField *f, const char *value)
{
	KeyProblem	problem;
	char	   *clear;

	if (!secrets_is_sealed(value))
	{
		w->clear++;
		return NULL;
	}
	w->sealed++;
	clear = envelope_open(w, f, value, &problem);
	if (clear == NULL && w->error == NULL)
		w->error = problem_text(&problem);
	return clear;
}

/*
 * WALK_ROTATE of one secret: anything not under the current key is
 * (re-)encrypted under it; one under the current key is decrypted too, only
 * to verify it.  Raises if a secret cannot be decrypted.
 */
static char *
visit_rotate(SecretWalk *w, const SecretField *f, const char *value)
{
	SecretKey  *current = NULL;
	KeyProblem	problem;
	char	   *clear;

	if (!keyring_current(w->ring, &current, &problem))
		problem_raise(&problem);
	if (!secrets_is_sealed(value))
	{
		w->clear++;
		return envelope_seal(w, f, current, value);
	}
	w->sealed++;
	clear = envelope_open(w, f, value, &problem);
	if (clear == NULL)
		problem_raise(&problem);
	if (strncmp(value + strlen(SECRETS_PREFIX), current->id, SECRETS_KEY_ID_LEN) == 0)
		return NULL;
	return envelope_seal(w, f, current, clear);
}

/* What to store in place of one secret value, or NULL to keep it. */
static char *
visit(SecretWalk *w, const SecretField *f, JsonbContainer *parent, const char *value)
{
	switch (w->mode)
	{
		case WALK_SEAL:
			return visit_seal(w, f, parent, value);
		case WALK_OPEN:
			return visit_open(w, f, value);
		case WALK_ROTATE:
			return visit_rotate(w, f, value);
		case WALK_MASK:
			return pstrdup(MASK);
		case WALK_COUNT:
			if (secrets_is_sealed(value))
				w->sealed++;
			else
				w->clear++;
			return NULL;
	}
	return NULL;
}

/*
 * Copy one JSON object into the parse state, visiting the secret fields
 * (object: the enclosing secret object's key, NULL at the top level).
 * Returns what the closing pushJsonbValue returned.
 */
static JsonbValue *
walk_object(SecretWalk *w, JsonbContainer *c, const char *object, JsonbParseState **state)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *result = NULL;
	char	   *key = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const SecretField *f;

		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
				pushJsonbValue(state, tok, NULL);
				break;
			case WJB_END_OBJECT:
				result = pushJsonbValue(state, tok, NULL);
				break;
			case WJB_KEY:
				key = pnstrdup(v.val.string.val, v.val.string.len);
				pushJsonbValue(state, WJB_KEY, &v);
				break;
			case WJB_VALUE:
				if (object == NULL && v.type == jbvBinary &&
					JsonContainerIsObject(v.val.binary.data) && secret_object(w->provider_id, key))
					walk_object(w, v.val.binary.data, key, state);
				else if (v.type == jbvString && (f = secret_field(w->provider_id, object, key)) != NULL)
				{
					char	   *value = pnstrdup(v.val.string.val, v.val.string.len);
					char	   *replacement;

					walk_wipe_later(w, value);
					replacement = visit(w, f, c, value);
					if (replacement != NULL)
					{
						JsonbValue	nv;

						nv.type = jbvString;
						nv.val.string.val = replacement;
						nv.val.string.len = strlen(replacement);
						pushJsonbValue(state, WJB_VALUE, &nv);
						w->changed = true;
					}
					else
						pushJsonbValue(state, WJB_VALUE, &v);
				}
				else
					pushJsonbValue(state, WJB_VALUE, &v);
				break;
			default:
				elog(ERROR, "novu: unexpected jsonb token %d in credentials", (int) tok);
		}
	}
	return result;
}

/*
 * Walk an integration's credentials: the result with the visited secrets
 * replaced, or credentials itself when nothing changed (w->changed).  The
 * caller wipes (walk_wipe) once it has copied what it needs.
 */
static Jsonb *
walk_credentials(SecretWalk *w, Jsonb *credentials)
{
	JsonbParseState *state = NULL;
	JsonbValue *result;

	w->changed = false;
	w->root = credentials;
	if (credentials == NULL || !JB_ROOT_IS_OBJECT(credentials) || JB_ROOT_IS_SCALAR(credentials) ||
		!provider_has_secrets(w->provider_id))
		return credentials;
	result = walk_object(w, &credentials->root, NULL, &state);
	if (!w->changed)
		return credentials;
	return JsonbValueToJsonb(result);
}

/* walk_credentials, then wipe the keys of the walk's ring, also on error. */
static Jsonb *
walk_with_ring(SecretWalk *w, Jsonb *credentials)
{
	Jsonb	   *result;

	PG_TRY();
	{
		result = walk_credentials(w, credentials);
	}
	PG_FINALLY();
	{
		keyring_clear(w->ring);
	}
	PG_END_TRY();
	return result;
}

/* ---------------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------------
 */

/*
 * The credentials with every sealed secret decrypted, for the delivery
 * worker's cache; NULL with *error set when one cannot be.  The work (and
 * every buffer holding a secret, wiped) happens in a scratch context; only
 * the result is allocated in the caller's context.
 */
Jsonb *
secrets_open_credentials(int64 integration_id, const char *provider_id,
						 Jsonb *credentials, char **error)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext scratch;
	KeyRing		ring;
	SecretWalk	w;
	Jsonb	   *opened;
	Jsonb	   *result = credentials;

	*error = NULL;
	if (credentials == NULL || !provider_has_secrets(provider_id))
		return credentials;
	scratch = AllocSetContextCreate(caller, "novu secrets", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(scratch);
	memset(&ring, 0, sizeof(ring));
	memset(&w, 0, sizeof(w));
	w.mode = WALK_OPEN;
	w.id = integration_id;
	w.provider_id = provider_id;
	w.ring = &ring;
	opened = walk_credentials(&w, credentials);
	MemoryContextSwitchTo(caller);
	if (w.error != NULL)
		*error = pstrdup(w.error);
	else if (w.changed)
	{
		result = palloc(VARSIZE(opened));
		memcpy(result, opened, VARSIZE(opened));
	}
	if (w.changed)
		explicit_bzero(opened, VARSIZE(opened));
	walk_wipe(&w);
	keyring_clear(&ring);
	MemoryContextDelete(scratch);
	return *error ? NULL : result;
}

/* Fold one file's identity (or its absence) into a hash. */
static uint32
file_state(const char *path, uint32 h)
{
	struct stat st;
	uint64		parts[6] = {0, 0, 0, 0, 0, 0};

	if (path != NULL && path[0] != '\0')
	{
		h = hash_combine(h, hash_bytes((const unsigned char *) path, strlen(path)));
		if (stat(path, &st) == 0)
		{
			parts[0] = (uint64) st.st_dev;
			parts[1] = (uint64) st.st_ino;
			parts[2] = (uint64) st.st_mtime;
			parts[3] = (uint64) st.st_size;
			parts[4] = (uint64) st.st_mode;
			parts[5] = (uint64) st.st_uid;
		}
		else
			parts[0] = (uint64) errno;
	}
	return hash_combine(h, hash_bytes((const unsigned char *) parts, sizeof(parts)));
}

/* A value that changes when the key settings or the key files change. */
uint32
secrets_key_state(void)
{
	uint32		h = file_state(novu_secret_key_file, 0x6e6f7675);

	return file_state(novu_previous_secret_key_file, h);
}

/* ---------------------------------------------------------------------------
 * SQL
 * ---------------------------------------------------------------------------
 */

/* The attribute number of a column of novu.integrations, or an error. */
static int
integrations_attnum(TupleDesc desc, const char *name)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0)
		elog(ERROR, "novu: novu.integrations has no column \"%s\"", name);
	return attnum;
}

/*
 * A column of a novu.integrations row the trigger needs; NULL is an error
 * here, as the NOT NULL constraint (checked after BEFORE triggers) would say.
 */
static Datum
integrations_value(HeapTuple tuple, TupleDesc desc, const char *name)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, integrations_attnum(desc, name), desc, &isnull);

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("null value in column \"%s\" of relation \"integrations\" violates not-null constraint",
						name),
				 errhint("Create and change integrations with novu.create_integration and novu.update_integration.")));
	return d;
}

/*
 * novu._seal_secrets(): BEFORE INSERT OR UPDATE OF id, provider_id,
 * credentials ON novu.integrations FOR EACH ROW.  Encrypts every clear secret
 * of the new row under the current key (see visit_seal for the rules), and
 * keeps sealed ones from moving to another id or provider.
 */
Datum
novu_seal_secrets(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	tuple;
	HeapTuple	old_tuple = NULL;
	int			att_credentials;
	Datum		d;
	bool		isnull;
	KeyRing		ring;
	SecretWalk	w;
	Jsonb	   *sealed;
	Datum		newval;
	bool		newnull = false;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("novu._seal_secrets() can only be called as a trigger")));
	rel = td->tg_relation;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)) ||
		strcmp(RelationGetRelationName(rel), "integrations") != 0 ||
		get_namespace_name(RelationGetNamespace(rel)) == NULL ||
		strcmp(get_namespace_name(RelationGetNamespace(rel)), "novu") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("novu._seal_secrets() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW on novu.integrations")));

	desc = RelationGetDescr(rel);
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		tuple = td->tg_newtuple;
		old_tuple = td->tg_trigtuple;
	}
	else
		tuple = td->tg_trigtuple;
	att_credentials = integrations_attnum(desc, "credentials");

	d = heap_getattr(tuple, att_credentials, desc, &isnull);
	if (isnull)
		return PointerGetDatum(tuple);

	memset(&ring, 0, sizeof(ring));
	memset(&w, 0, sizeof(w));
	w.mode = WALK_SEAL;
	w.ring = &ring;
	w.id = DatumGetInt64(integrations_value(tuple, desc, "id"));
	w.identifier = TextDatumGetCString(integrations_value(tuple, desc, "identifier"));
	w.provider_id = TextDatumGetCString(integrations_value(tuple, desc, "provider_id"));
	if (old_tuple != NULL)
	{
		Datum		od = heap_getattr(old_tuple, att_credentials, desc, &isnull);

		if (!isnull)
			w.old = DatumGetJsonbP(od);
	}

	sealed = walk_with_ring(&w, DatumGetJsonbP(d));

	/* a ciphertext is bound to its row's id and provider */
	if (old_tuple != NULL && w.sealed > 0 &&
		(DatumGetInt64(integrations_value(old_tuple, desc, "id")) != w.id ||
		 strcmp(TextDatumGetCString(integrations_value(old_tuple, desc, "provider_id")), w.provider_id) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the id and provider_id of integration \"%s\" cannot change: its encrypted secrets are bound to them",
						w.identifier),
				 errhint("Create a new integration instead.")));

	if (!w.changed)
	{
		walk_wipe(&w);
		return PointerGetDatum(tuple);
	}
	newval = JsonbPGetDatum(sealed);
	result = heap_modify_tuple_by_cols(tuple, desc, 1, &att_credentials, &newval, &newnull);
	walk_wipe(&w);
	return PointerGetDatum(result);
}

/* novu._mask_secrets(provider_id text, credentials jsonb) RETURNS jsonb: every secret shown as ********. */
Datum
novu_mask_secrets(PG_FUNCTION_ARGS)
{
	SecretWalk	w;
	Jsonb	   *masked;

	memset(&w, 0, sizeof(w));
	w.mode = WALK_MASK;
	w.provider_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	masked = walk_credentials(&w, PG_GETARG_JSONB_P(1));
	walk_wipe(&w);
	PG_RETURN_JSONB_P(masked);
}

/* Raise unless the current user is a superuser. */
static void
require_superuser(const char *function)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", function),
				 errdetail("It decrypts every integration secret: only superusers may run it.")));
}

/*
 * Move every secret of novu.integrations under the current key: values
 * sealed under the previous key are re-encrypted, clear ones (from before
 * 0.4.0) encrypted, those already under the current key verified and left
 * alone.  Raises, changing nothing, if a secret cannot be decrypted (naming
 * the integration and the field) or no key is usable.
 * Returns the number of integrations rewritten.
 */
static int
reencrypt_rows(KeyRing *ring)
{
	SecretKey  *current = NULL;
	KeyProblem	problem;
	SPITupleTable *rows;
	uint64		nrows;
	uint64		i;
	int			rewritten = 0;
	Oid			argtypes[2] = {INT8OID, JSONBOID};

	if (!keyring_current(ring, &current, &problem))
	{
		if (problem.sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
			ereport(ERROR,
					(errcode(problem.sqlerrcode),
					 errmsg("cannot encrypt integration secrets: novu.secret_key_file is not set"),
					 errhint("%s", KEY_HINT)));
		problem_raise(&problem);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "novu: SPI_connect failed");
	if (SPI_execute("SELECT id, identifier, provider_id, credentials FROM novu.integrations"
					" ORDER BY id FOR UPDATE", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: reading novu.integrations failed");
	rows = SPI_tuptable;
	nrows = SPI_processed;
	for (i = 0; i < nrows; i++)
	{
		HeapTuple	tup = rows->vals[i];
		TupleDesc	desc = rows->tupdesc;
		bool		isnull;
		Datum		cd = SPI_getbinval(tup, desc, 4, &isnull);
		SecretWalk	w;
		Jsonb	   *rotated;
		Datum		values[2];

		if (isnull)
			continue;
		memset(&w, 0, sizeof(w));
		w.mode = WALK_ROTATE;
		w.ring = ring;
		w.id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		w.identifier = SPI_getvalue(tup, desc, 2);
		w.provider_id = SPI_getvalue(tup, desc, 3);
		rotated = walk_credentials(&w, DatumGetJsonbP(cd));
		if (w.changed)
		{
			values[0] = Int64GetDatum(w.id);
			values[1] = JsonbPGetDatum(rotated);
			if (SPI_execute_with_args("UPDATE novu.integrations SET credentials = $2"
									  " WHERE id OPERATOR(pg_catalog.=) $1",
									  2, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "novu: updating novu.integrations failed");
			rewritten++;
		}
		walk_wipe(&w);
	}
	SPI_finish();
	return rewritten;
}

/* reencrypt_rows with the key files read once, their keys wiped afterwards (also on error). */
static int
reencrypt_all(void)
{
	KeyRing		ring;
	int			rewritten;

	memset(&ring, 0, sizeof(ring));
	PG_TRY();
	{
		reencrypting = true;
		rewritten = reencrypt_rows(&ring);
	}
	PG_FINALLY();
	{
		reencrypting = false;
		keyring_clear(&ring);
	}
	PG_END_TRY();
	return rewritten;
}

/*
 * novu.reencrypt_secrets() RETURNS integer: every integration secret under
 * the current key (superuser only; see reencrypt_all).  Run after changing
 * novu.secret_key_file (with the old key as novu.previous_secret_key_file),
 * and once after an upgrade from 0.3.0 without a key.
 */
Datum
novu_reencrypt_secrets(PG_FUNCTION_ARGS)
{
	require_superuser("novu.reencrypt_secrets()");
	PG_RETURN_INT32(reencrypt_all());
}

/*
 * novu._secrets_upgrade(): run by the 0.3.0 -> 0.4.0 script.  With a key
 * configured, encrypts the clear secrets now; without one, warns that they
 * stay in clear (the workers still deliver with them) until
 * novu.reencrypt_secrets() runs.
 */
Datum
novu_secrets_upgrade(PG_FUNCTION_ARGS)
{
	int			clear = 0;
	uint64		i;

	require_superuser("novu._secrets_upgrade()");
	if (novu_secret_key_file != NULL && novu_secret_key_file[0] != '\0')
	{
		int			n = reencrypt_all();

		if (n > 0)
			ereport(NOTICE,
					(errmsg_plural("encrypted the secrets of %d integration under novu.secret_key_file",
								   "encrypted the secrets of %d integrations under novu.secret_key_file",
								   n, n)));
		PG_RETURN_VOID();
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "novu: SPI_connect failed");
	if (SPI_execute("SELECT provider_id, credentials FROM novu.integrations", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "novu: reading novu.integrations failed");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		Datum		cd = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);
		SecretWalk	w;

		if (isnull)
			continue;
		memset(&w, 0, sizeof(w));
		w.mode = WALK_COUNT;
		w.provider_id = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);
		walk_credentials(&w, DatumGetJsonbP(cd));
		walk_wipe(&w);
		if (w.clear > 0)
			clear++;
	}
	SPI_finish();
	if (clear > 0)
		ereport(WARNING,
				(errmsg_plural("the secrets of %d integration stay in clear text: novu.secret_key_file is not set",
								"the secrets of %d integrations stay in clear text: novu.secret_key_file is not set",
								clear, clear),
				 errdetail("The delivery workers keep using them, but pg_dump output and backups hold them readable."),
				 errhint("Set novu.secret_key_file to a file made with openssl rand -hex 32, mode 0600, "
						 "reload the configuration, then run SELECT novu.reencrypt_secrets(); as a superuser.")));
	PG_RETURN_VOID();
}
