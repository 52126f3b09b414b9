#!/usr/bin/env python3
"""Drive the agentseal MCP server with the official Python MCP SDK (2.x) over real stdio pipes.

Used by tests/mcp_python.rs. For each protocol revision, spawns the servers of agents A and B as
child processes through the SDK's stdio transport and exercises every tool and resource:

* 2025-11-25: `Client(mode="legacy")`, the initialize handshake.
* 2026-07-28: `Client(mode="auto")`, which probes `server/discover` and adopts the stateless
  per-request envelope when the server answers it (it falls back to initialize otherwise, so the
  script checks that the discover result was adopted and the negotiated version is 2026-07-28).

Prints one `PASS  [revision] check` or `FAIL  [revision] check: detail` line per check and exits 1
if any check failed (2 on bad usage).

    python mcp_client.py --agentseal target/debug/agentseal --data-dir D --agent-a A --agent-b B
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any

import anyio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import ClientSession
from mcp_types import INVALID_PARAMS, CallToolResult

EXPECTED_TOOLS = {
    "whoami",
    "sign_action",
    "present_certificate",
    "verify_peer",
    "check_revocation",
    "revoke",
    "new_challenge",
}
RESOURCES = ("agentseal://agent/certificate", "agentseal://ca/jwks", "agentseal://ca/crl")

# The `typ` of the JWS each JWS resource holds (docs/formats.md).
JWS_TYP = {"agentseal://agent/certificate": "agent-cert+jwt", "agentseal://ca/crl": "agent-crl+jwt"}

# revision label -> Client(mode=...)
MODES = {"2025-11-25": "legacy", "2026-07-28": "auto"}

# Seconds allowed for one revision's whole run (two servers, a dozen calls).
MODE_TIMEOUT = 120


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0

    def __call__(self, label: str, name: str, ok: bool, detail: Any = "") -> bool:
        if ok:
            self.passed += 1
            suffix = f" ({detail})" if detail not in ("", None) else ""
            print(f"PASS  [{label}] {name}{suffix}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL  [{label}] {name}: {detail}", flush=True)
        return ok


class Step(Exception):
    """A check failed in a way that makes the rest of the revision's run meaningless."""


def b64_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def jws_typs(text: str) -> list[str]:
    """The `typ` of every protected header of a compact or general-JSON JWS ([] if neither)."""
    try:
        if text.count(".") == 2 and not text.lstrip().startswith("{"):
            return [b64_json(text.split(".")[0]).get("typ")]
        return [b64_json(s["protected"]).get("typ") for s in json.loads(text)["signatures"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def server(binary: str, data_dir: str, agent: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=binary,
        args=["--data-dir", data_dir, "--key-store", "keyutils", "serve", "--agent", agent],
    )


def negotiated(client: Client) -> str:
    session: ClientSession = client.session
    how = "server/discover" if session.discover_result is not None else "initialize"
    if session.initialize_result is not None and session.discover_result is not None:
        how = "both?!"
    info = client.server_info
    name = f"{info.name} {info.version}" if info is not None else "anonymous"
    return f"protocol={client.protocol_version} via={how} server={name}"


async def call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Calls `tool`; returns its structured content (the SDK checks it against the output schema)."""
    result: CallToolResult = await client.call_tool(tool, args)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise Step(f"{tool} returned isError: {text}")
    if result.structured_content is None:
        raise Step(f"{tool} returned no structured content")
    return result.structured_content


async def run_mode(label: str, mode: str, binary: str, data_dir: str, a: str, b: str, check: Checks) -> None:
    async with (
        Client(server(binary, data_dir, a), mode=mode) as alice,
        Client(server(binary, data_dir, b), mode=mode) as bob,
    ):
        for who, client in (("A", alice), ("B", bob)):
            desc = negotiated(client)
            print(f"INFO  [{label}] agent {who} negotiated {desc}", flush=True)
            ok = client.protocol_version == label
            if label == "2026-07-28":
                ok = ok and client.session.discover_result is not None
                ok = ok and client.session.initialize_result is None
            else:
                ok = ok and client.session.initialize_result is not None
            if not check(label, f"agent {who} negotiated protocol {label}", ok, desc):
                raise Step(f"agent {who} negotiated {desc}, wanted {label}")

        # tools/list: all seven, each with an input and an output schema.
        listed = await alice.list_tools()
        tools = {t.name: t for t in listed.tools}
        check(label, "tools/list lists 7 tools", len(listed.tools) == 7 and set(tools) == EXPECTED_TOOLS, sorted(tools))
        no_out = sorted(n for n, t in tools.items() if not t.output_schema)
        check(label, "every tool has an output schema", not no_out, f"missing: {no_out}" if no_out else "")
        no_in = sorted(n for n, t in tools.items() if t.input_schema.get("type") != "object")
        check(label, "every tool has an object input schema", not no_in, f"missing: {no_in}" if no_in else "")
        await bob.list_tools()  # the SDK validates structured results against listed schemas

        # whoami on both.
        me_a = await call(alice, "whoami", {})
        check(label, "A whoami", me_a.get("agent_id") == a, me_a.get("algorithms"))
        me_b = await call(bob, "whoami", {})
        check(label, "B whoami", me_b.get("agent_id") == b, me_b.get("algorithms"))

        # A signs an action for B, bound to its arguments, and presents its certificate.
        arguments = {"service": "web", "version": "1.4.2", "mode": label}
        signed = await call(alice, "sign_action", {"action": "deploy", "audience": b, "arguments": arguments})
        check(
            label,
            "A sign_action for audience B",
            isinstance(signed.get("token"), str) and bool(signed.get("token_id")),
            f"token_id={signed.get('token_id')}",
        )
        challenge = (await call(bob, "new_challenge", {}))["challenge"]  # B's fresh, single-use challenge
        presented = await call(alice, "present_certificate", {"challenge": challenge, "audience": b})
        check(
            label,
            "A present_certificate with challenge for B",
            isinstance(presented.get("certificate"), str) and isinstance(presented.get("proof"), str),
        )

        # B verifies everything A sent.
        evidence = {
            "token": signed["token"],
            "certificate": presented["certificate"],
            "proof": presented["proof"],
            "challenge": challenge,
            "expected_action": "deploy",
            "arguments": arguments,
        }
        verdict = await call(bob, "verify_peer", evidence)
        check(
            label,
            "B verify_peer: valid",
            verdict.get("valid") is True
            and verdict.get("agent_id") == a
            and verdict.get("proof_verified") is True
            and verdict.get("reasons") == [],
            json.dumps({k: verdict.get(k) for k in ("valid", "reasons", "message", "agent_id")}),
        )

        # check_revocation before the revoke.
        status = await call(bob, "check_revocation", {"token_id": signed["token_id"]})
        check(label, "B check_revocation: not revoked", status.get("revoked") is False, status.get("freshness"))

        # A revokes its own token; B sees it.
        revoked = await call(alice, "revoke", {"token": signed["token"], "reason": f"python {label} test"})
        check(
            label,
            "A revoke own token",
            revoked.get("kind") == "token" and revoked.get("ids") == [signed["token_id"]],
            revoked,
        )
        # The proof's challenge was single-use; the token and certificate alone are checked again.
        token_only = {k: v for k, v in evidence.items() if k not in ("proof", "challenge")}
        verdict = await call(bob, "verify_peer", token_only)
        check(
            label,
            'B verify_peer after revoke: reasons ["revoked"]',
            verdict.get("valid") is False and verdict.get("reasons") == ["revoked"],
            verdict.get("reasons"),
        )
        status = await call(bob, "check_revocation", {"token": signed["token"]})
        check(
            label,
            "B check_revocation after revoke: revoked",
            status.get("revoked") is True and status.get("reason") == f"python {label} test",
            status.get("reason"),
        )

        # Resources: listed, and each readable as non-empty text.
        listed_resources = await alice.list_resources()
        uris = sorted(str(r.uri) for r in listed_resources.resources)
        check(label, "resources/list lists the 3 resources", uris == sorted(RESOURCES), uris)
        for uri in RESOURCES:
            read = await alice.read_resource(uri)
            texts = [getattr(c, "text", None) for c in read.contents]
            mime = [c.mime_type for c in read.contents]
            ok = len(texts) == 1 and isinstance(texts[0], str) and len(texts[0]) > 0
            detail: Any = texts
            if ok and uri in JWS_TYP:
                typs = jws_typs(texts[0])
                ok = bool(typs) and set(typs) == {JWS_TYP[uri]}
                shape = "compact" if texts[0].count(".") == 2 else "JSON"
                detail = f"{shape} JWS typ={typs} mimeType={mime[0]} {len(texts[0])} chars"
            elif ok:
                keys = json.loads(texts[0]).get("keys")
                ok = isinstance(keys, list) and len(keys) > 0
                detail = f"{len(keys or [])} keys mimeType={mime[0]}"
            check(label, f"resources/read {uri}", ok, detail)

        # A malformed call is a JSON-RPC error -32602, not a tool result.
        try:
            result = await alice.call_tool("sign_action", {"action": "deploy"})
            check(label, "sign_action without audience is JSON-RPC error -32602", False, f"got a result: {result}")
        except MCPError as e:
            check(
                label,
                "sign_action without audience is JSON-RPC error -32602",
                e.code == INVALID_PARAMS and "audience" in e.message,
                f"code={e.code} message={e.message!r}",
            )

        # Still serving after the error.
        me_a = await call(alice, "whoami", {})
        check(label, "A still serves after the error", me_a.get("agent_id") == a)


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as anyio task groups raise them."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for inner in e.exceptions for leaf in leaves(inner)]
    return [e]


async def main_async(args: argparse.Namespace) -> int:
    check = Checks()
    for label, mode in MODES.items():
        print(f"INFO  [{label}] Client(mode={mode!r})", flush=True)
        try:
            with anyio.fail_after(MODE_TIMEOUT):
                await run_mode(label, mode, args.agentseal, args.data_dir, args.agent_a, args.agent_b, check)
            print(f"DONE  [{label}] mode ran to the end", flush=True)
        except Step as e:
            check(label, "run", False, e)
        except TimeoutError:
            check(label, "run", False, f"timed out after {MODE_TIMEOUT}s")
        except Exception as e:  # report, keep going with the next revision
            check(label, "run", False, "; ".join(f"{type(x).__name__}: {x}" for x in leaves(e)))
    print(f"{check.passed} passed, {check.failed} failed", flush=True)
    return 1 if check.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agentseal", required=True, help="path of the agentseal binary")
    parser.add_argument("--data-dir", required=True, help="installation directory (keyutils key store)")
    parser.add_argument("--agent-a", required=True, help="agent that signs, presents and revokes")
    parser.add_argument("--agent-b", required=True, help="agent that verifies")
    args = parser.parse_args()
    import importlib.metadata

    print(f"INFO  python {sys.version.split()[0]}, mcp {importlib.metadata.version('mcp')}", flush=True)
    return anyio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
