#!/usr/bin/env python3
"""Ask agentseal to sign an action its policy marks for approval, answering as the person would.

Used by tests/it/approval.rs. Spawns `agentseal serve --agent AGENT` over stdio with the official
Python MCP SDK (2.x) and an elicitation callback, calls `sign_action`, and prints one JSON line:
the protocol revision negotiated, the questions the person was asked, and the tool result.

* `--mode legacy`: MCP 2025-11-25; the server sends `elicitation/create` during the call.
* `--mode auto`: MCP 2026-07-28; the call answers "input required" with the question and a sealed
  request state, and the SDK retries with the answer (its input-required loop).
* `--answer approve|decline|cancel|reject`: accept with approve=true; decline; cancel; accept with
  approve=false.
* `--no-elicitation`: a client without an elicitation callback (it cannot ask anyone).

    python approval_client.py --agentseal target/debug/agentseal --data-dir D --agent A \
        --audience B --action payments.refund --mode auto --answer approve
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import mcp.types as types
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext

ANSWERS = {
    "approve": types.ElicitResult(action="accept", content={"approve": True}),
    "reject": types.ElicitResult(action="accept", content={"approve": False}),
    "decline": types.ElicitResult(action="decline"),
    "cancel": types.ElicitResult(action="cancel"),
}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    asked: list[dict[str, Any]] = []

    async def on_elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append({"message": params.message, "schema": getattr(params, "requested_schema", None)})
        return ANSWERS[args.answer]

    server = StdioServerParameters(
        command=args.agentseal,
        args=["--data-dir", args.data_dir, "--key-store", "keyutils", "serve", "--agent", args.agent],
    )
    callback = None if args.no_elicitation else on_elicit
    async with Client(server, mode=args.mode, elicitation_callback=callback) as client:
        result = await client.call_tool(
            "sign_action",
            {"action": args.action, "audience": args.audience, "arguments": {"amount": "12.00"}},
        )
        return {
            "protocol": str(client.protocol_version),
            "asked": asked,
            "is_error": bool(result.is_error),
            "structured": result.structured_content,
            "text": " ".join(getattr(c, "text", "") for c in result.content),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agentseal", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--action", required=True)
    parser.add_argument("--mode", choices=["legacy", "auto"], required=True)
    parser.add_argument("--answer", choices=sorted(ANSWERS), default="approve")
    parser.add_argument("--no-elicitation", action="store_true")
    args = parser.parse_args()
    print(json.dumps(anyio.run(run, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
