#!/usr/bin/env python3
"""Verifies one captured webhook delivery with the official Standard Webhooks library.

Reads a JSON object on stdin: {"secret": "whsec_...", "headers": {...}, "body": "<raw body>"}.
Prints "ok" and exits 0 when the signature verifies; prints the reason and exits 1 when it does
not; exits 2 when the library is missing (install it with `pip install standardwebhooks`).
"""

import json
import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as exc:  # the caller turns this into a failing test, never a skip
    print(f"standardwebhooks is not installed ({exc}); run: pip install standardwebhooks")
    sys.exit(2)


def main() -> int:
    delivery = json.load(sys.stdin)
    try:
        Webhook(delivery["secret"]).verify(delivery["body"], delivery["headers"])
    except WebhookVerificationError as exc:
        print(f"verification failed: {exc}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
