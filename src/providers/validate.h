/*
 * validate.h
 *		The toolkit a provider's validate() uses to check integration
 *		credentials at SQL time: read a key, require it, fail naming the field.
 *
 * Errors are ERRCODE_INVALID_PARAMETER_VALUE with
 *	 invalid credentials for provider "<id>": <field> <problem>
 * plus the OpenSSL reason as detail where there is one, and a hint saying
 * what is expected.  No message ever quotes a value (a key that fails to
 * parse is still a secret).  Raising is right here: this runs in a SQL call;
 * the delivery worker uses crypto.h, which never raises.
 */
#ifndef NOVU_VALIDATE_H
#define NOVU_VALIDATE_H

#include <openssl/evp.h>

#include "utils/jsonb.h"

#define ENDPOINT_HINT \
	"Give a base URL https://host[:port] with no path, e.g. https://push-proxy.example.com:8443."

/* What is being checked: one JSON object of the credentials, and where its result goes. */
typedef struct CredCheck
{
	const char *provider;		/* provider_id, for messages */
	JsonbContainer *container;	/* the object being checked */
	const char *prefix;			/* "" or "serviceAccount." for field names */
	const char *const *accepted;	/* accepted keys of this object */
	JsonbParseState **state;	/* normalized result under construction */
} CredCheck;

extern void cred_fail(CredCheck *c, const char *field, const char *problem,
					  const char *detail, const char *hint) pg_attribute_noreturn();
extern void cred_check_keys(CredCheck *c);
extern bool cred_get(CredCheck *c, const char *key, JsonbValue *v);
extern bool cred_has(CredCheck *c, const char *key);
extern char *cred_string(CredCheck *c, const char *key, bool required, const char *hint);
extern char *cred_token(CredCheck *c, const char *key, bool required, const char *hint);
extern void cred_push_string(CredCheck *c, const char *key, const char *value);
extern void cred_endpoint(CredCheck *c);
extern EVP_PKEY *cred_private_key(CredCheck *c, const char *field, const char *pem,
								  const char *expected, const char *hint);
extern Jsonb *cred_parse_json_object(const char *s, int len, char **detail);

#endif							/* NOVU_VALIDATE_H */
