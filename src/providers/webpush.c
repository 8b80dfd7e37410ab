/*
 * webpush.c
 *		Web Push (RFC 8030, RFC 8291 encryption, RFC 8292 VAPID; PROTOCOLS.md
 *		section 5): the target is the browser's PushSubscription JSON.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "crypto/crypto.h"
#include "crypto/envelope.h"
#include "net/netpolicy.h"
#include "providers/provider.h"
#include "providers/rules.h"
#include "providers/validate.h"

#define WEBPUSH_KEY_MAX_LEN		256

static const char *const webpush_keys[] = {"vapidPublicKey", "vapidPrivateKey", "subject", NULL};

/* web-push: a VAPID P-256 key pair as base64url raw keys, and a mailto:/https: subject. */
static void
webpush_validate(CredCheck *c)
{
	static const char *key_hint =
		"Give the VAPID keys as unpadded base64url raw keys (public: 65-byte uncompressed P-256 point, "
		"private: 32 bytes), as web-push generate-vapid-keys prints them.";
	static const char *subject_hint =
		"subject is the contact URI of the sender, e.g. mailto:ops@example.com or https://example.com/contact.";
	char	   *pub_b64;
	char	   *priv_b64;
	char	   *subject;
	unsigned char *pub;
	unsigned char *priv;
	size_t		publen = 0;
	size_t		privlen = 0;
	char	   *err = NULL;
	EVP_PKEY   *key;

	cred_check_keys(c);
	pub_b64 = cred_string(c, "vapidPublicKey", true, key_hint);
	priv_b64 = cred_string(c, "vapidPrivateKey", true, key_hint);
	subject = cred_string(c, "subject", true, subject_hint);

	pub = base64url_decode(pub_b64, &publen);
	if (pub == NULL)
		cred_fail(c, "vapidPublicKey", "is not base64url", NULL, key_hint);
	if (publen != CRYPTO_P256_PUBLIC_LEN || pub[0] != 0x04)
		cred_fail(c, "vapidPublicKey", "must be a 65-byte uncompressed P-256 point",
				  psprintf("It decodes to %zu bytes%s.", publen,
						   publen == CRYPTO_P256_PUBLIC_LEN ? " not starting with 0x04" : ""),
				  key_hint);
	key = crypto_p256_key_from_raw(pub, publen, NULL, 0, &err);
	if (key == NULL)
		cred_fail(c, "vapidPublicKey", "is not a valid P-256 public key", err, key_hint);
	EVP_PKEY_free(key);

	if (secrets_is_sealed(priv_b64))
		priv = NULL;			/* stored sealed: the trigger refuses a new public key without a new private key */
	else
	{
		priv = base64url_decode(priv_b64, &privlen);
		if (priv == NULL)
			cred_fail(c, "vapidPrivateKey", "is not base64url", NULL, key_hint);
		if (privlen != CRYPTO_P256_PRIVATE_LEN)
			cred_fail(c, "vapidPrivateKey", "must be a 32-byte P-256 private key",
					  psprintf("It decodes to %zu bytes.", privlen), key_hint);

		key = crypto_vapid_key(pub_b64, priv_b64, &err);
		if (key == NULL)
			cred_fail(c, NULL, "vapidPublicKey and vapidPrivateKey do not form a P-256 key pair", err,
					  "Give the public key that belongs to the private key.");
		EVP_PKEY_free(key);
	}

	if (!((pg_strncasecmp(subject, "mailto:", 7) == 0 && subject[7] != '\0') ||
		  (pg_strncasecmp(subject, "https:", 6) == 0 && subject[6] != '\0')))
		cred_fail(c, "subject", "must be a mailto: or https: URI", NULL, subject_hint);

	cred_push_string(c, "vapidPublicKey", base64url_encode(pub, publen));
	cred_push_string(c, "vapidPrivateKey", priv ? base64url_encode(priv, privlen) : priv_b64);
	cred_push_string(c, "subject", subject);
}

/* Whether a string value of a jsonb object is base64url text (padding allowed) of bounded length. */
static bool
b64url_member(JsonbContainer *c, const char *key)
{
	JsonbValue	v;
	int			i;
	int			len;

	if (!jsonb_container_get(c, key, &v) || v.type != jbvString)
		return false;
	len = v.val.string.len;
	while (len > 0 && v.val.string.val[len - 1] == '=')
		len--;
	if (len == 0 || len > WEBPUSH_KEY_MAX_LEN)
		return false;
	for (i = 0; i < len; i++)
	{
		if (!is_b64url(v.val.string.val[i]))
			return false;
	}
	return true;
}

/* Web Push: the browser's PushSubscription JSON (shape only). */
static bool
webpush_token_check(const char *t, size_t len, const char **problem)
{
	Jsonb	   *sub = jsonb_parse_or_null(t, (int) len);
	JsonbValue	v;
	size_t		i;

	if (sub == NULL || JB_ROOT_IS_SCALAR(sub) || !JB_ROOT_IS_OBJECT(sub))
	{
		*problem = "is not a JSON object";
		return false;
	}
	if (!jsonb_container_get(&sub->root, "endpoint", &v) || v.type != jbvString ||
		v.val.string.len <= 8 || strncmp(v.val.string.val, "https://", 8) != 0)
	{
		*problem = "has no https:// endpoint";
		return false;
	}
	for (i = 0; i < v.val.string.len; i++)
	{
		unsigned char c = (unsigned char) v.val.string.val[i];

		if (c <= 0x20 || c == 0x7f)
		{
			*problem = "has an endpoint with a space or a control character";
			return false;
		}
	}
	if (!jsonb_container_get(&sub->root, "keys", &v) || v.type != jbvBinary ||
		!JsonContainerIsObject(v.val.binary.data) ||
		!b64url_member(v.val.binary.data, "p256dh") || !b64url_member(v.val.binary.data, "auth"))
	{
		*problem = "lacks keys.p256dh and keys.auth as base64url strings";
		return false;
	}
	return true;
}

/* Web Push: the notification is free-form; the subscription is the target. */
static const FieldRule webpush_fields[] = {
	HEADERS("headers", novu_webpush_headers),
	REFUSE("endpoint", "the subscription's endpoint is the message's target"),
	REFUSE("keys", "the subscription's keys encrypt for its browser"),
	REFUSE("subscription", "the subscription is the message's target"),
	REFUSE("vapid*", "VAPID keys are the integration's credentials"),
	OTHERS(FIELD_ANY)
};

/* the VAPID private key is the secret; a new public key needs it again */
static const SecretField webpush_secrets[] = {
	{NULL, "vapidPrivateKey", "vapidPublicKey"},
	{NULL, NULL, NULL}
};

const ProviderOps novu_webpush_provider = {
	.provider_id = "web-push",
	.label = "web-push",
	.channel = CHANNEL_PUSH,
	.credential_keys = webpush_keys,
	.validate = webpush_validate,
	.secrets = webpush_secrets,
	.token_check = webpush_token_check,
	.token_form = "A web-push token is the browser's PushSubscription JSON: {\"endpoint\": \"https://...\", \"keys\": {\"p256dh\": \"...\", \"auth\": \"...\"}}.",
	.overrides = webpush_fields,
	.overrides_hint = "Web Push overrides may set notification fields and the headers TTL, Urgency and Topic.",
};
