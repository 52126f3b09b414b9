#!/usr/bin/env python3
"""Verify webhooks agentseal sent with Standard Webhooks' reference library (`standardwebhooks`).

Reads JSON from stdin: {"secret": "whsec_...", "deliveries": [{"id", "timestamp", "signature",
"body"}, ...]}, the headers and body each webhook arrived with. Each must verify (signature, and
a timestamp within the library's 5 minutes), and a copy with one byte of its body changed must
not. Prints one PASS/FAIL line per check; exits 0 only if every check passed.
"""

from __future__ import annotations

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    request = json.load(sys.stdin)
    hook = Webhook(request["secret"])
    failures = 0
    for delivery in request["deliveries"]:
        headers = {
            "webhook-id": delivery["id"],
            "webhook-timestamp": delivery["timestamp"],
            "webhook-signature": delivery["signature"],
        }
        try:
            event = hook.verify(delivery["body"], headers)
            print(f"PASS {delivery['id']} {event['type']} verifies")
        except WebhookVerificationError as error:
            failures += 1
            print(f"FAIL {delivery['id']} does not verify: {error}")
        body = delivery["body"]
        altered = body[:-2] + ("x" if body[-2] != "x" else "y") + body[-1:]
        try:
            hook.verify(altered, headers)
            failures += 1
            print(f"FAIL {delivery['id']} verifies with an altered body")
        except WebhookVerificationError:
            print(f"PASS {delivery['id']} altered body refused")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
