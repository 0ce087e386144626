"""schemathesis hooks for tests/contract/check.py (loaded through SCHEMATHESIS_HOOKS).

- Each generated `Idempotency-Key` is made unique: the fuzzer cannot know that reusing a key with
  another body is refused (422 `idempotency_key_reused`, which the suite tests on its own).
- `valid_requests_are_accepted` replaces schemathesis' `positive_data_acceptance`: a request the
  schema allows must get a 2xx, or a refusal that depends on stored state the schema cannot know
  (404 for an id that does not exist, 409 conflicts, and the 422 codes listed below). A 400, a
  401/403/429 or a 422 naming a field is a schema that promises more than the server takes.
"""

import itertools
import json
import re

import schemathesis

_counter = itertools.count()

# 422 codes that depend on stored data or on another resource, never on the request's shape.
STATE_DEPENDENT_422 = {
    "template_not_found",      # the named template does not exist in the account
    "template_language_required",  # ... exists in several languages
    "missing_variables",       # ... the stored template needs other variables
    "unexpected_variables",
    "invalid_variables",
    "contact_not_found",       # contact_id of no contact
    "contact_opted_out",       # the stored contact opted out
    "invalid_expires_at",      # an expiry in the past: depends on the clock
    "invalid_flow",            # cross-references between steps (ids, targets): see below
    "channel_not_configured",  # test connection before WhatsApp settings were saved
    "outside_customer_service_window",  # no inbound message from the number in 24 h
    "too_many_api_keys",       # the account holds account_limits.max_api_keys keys already
    "too_many_webhook_endpoints",  # ... account_limits.max_webhook_endpoints endpoints
}
# invalid_flow is accepted only for these cross-field rules, not for a field's own shape.
FLOW_CROSS_FIELD = ("duplicate", "unknown step", "no step with id", "unreachable", "{{")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            headers[name] = f"contract-{next(_counter)}"


@schemathesis.check
def valid_requests_are_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if 200 <= status < 300 or status in (404, 409):
        return None
    code, message = "", ""
    try:
        error = json.loads(response.text)["error"]
        code, message = error.get("code", ""), error.get("message", "")
    except (ValueError, KeyError, TypeError):
        pass
    if status == 422 and code == "no_valid_recipients":
        # Every recipient was rejected; fine if each reason is one of the state-dependent ones.
        reasons = set(re.findall(r"\((\w+)\)", message))
        if reasons and reasons <= STATE_DEPENDENT_422:
            return None
    if status == 422 and code in STATE_DEPENDENT_422:
        if code != "invalid_flow" or any(m in message for m in FLOW_CROSS_FIELD):
            return None
    raise AssertionError(
        f"a schema-valid request was refused: {status} {code}: {message}"
    )
