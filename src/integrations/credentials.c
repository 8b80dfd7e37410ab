/*
 * credentials.c
 *		novu._validate_integration(): an integration's credentials checked
 *		and normalized by its provider's validate() (providers/).
 *
 * Providers check the keys of DESIGN.md 3a (Novu's names) with OpenSSL where
 * they hold keys, and return them normalized: serviceAccount given as a
 * string is parsed, "secure" becomes a boolean, defaults are filled in, URLs
 * pass the outbound URL policy and base URLs lose their trailing "/", PEM
 * text given with literal \n escapes is stored with real newlines, VAPID keys
 * are re-encoded as unpadded base64url.  A key whose value is JSON null
 * counts as absent and is dropped (so update_integration can remove a key).
 *
 * A secret that is already sealed (secrets.c: update_integration merges the
 * stored credentials with the changes) was validated when it was stored and
 * passes as it is; the novu.integrations trigger encrypts the clear ones.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "common/jsonb_util.h"
#include "integrations/credentials.h"
#include "novu.h"
#include "providers/provider.h"
#include "providers/validate.h"

PG_FUNCTION_INFO_V1(novu_validate_integration);

/* The provider of an id, or an error listing the known ones. */
const ProviderOps *
novu_provider_or_error(const char *provider_id)
{
	const ProviderOps *ops = provider_id ? novu_provider_lookup(provider_id) : NULL;

	if (ops == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider_id \"%s\"", provider_id ? provider_id : "(null)"),
				 errhint("Known providers: %s.", novu_provider_list())));
	return ops;
}

/* Validate and normalize the credentials of a provider; raises naming the bad field. */
Jsonb *
novu_validate_credentials(const char *provider_id, Jsonb *credentials)
{
	const ProviderOps *ops = novu_provider_or_error(provider_id);
	JsonbParseState *state = NULL;
	JsonbValue *result;
	CredCheck	c;

	novu_check_json_size(credentials, "credentials", NOVU_MAX_CREDENTIALS_BYTES);

	c.provider = provider_id;
	c.container = &credentials->root;
	c.prefix = "";
	c.accepted = ops->credential_keys;
	c.state = &state;
	if (!JB_ROOT_IS_OBJECT(credentials) || JB_ROOT_IS_SCALAR(credentials))
		cred_fail(&c, "credentials", "must be a JSON object", NULL,
				  "Give an object with the provider's keys, e.g. {\"apiKey\": \"...\"}.");

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	ops->validate(&c);
	result = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(result);
}

/* novu._validate_integration(provider_id text, credentials jsonb) RETURNS jsonb */
Datum
novu_validate_integration(PG_FUNCTION_ARGS)
{
	char	   *provider_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *credentials = PG_GETARG_JSONB_P(1);

	PG_RETURN_JSONB_P(novu_validate_credentials(provider_id, credentials));
}
