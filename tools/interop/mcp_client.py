#!/usr/bin/env python3
"""Drive the agentseal MCP server with the official Python MCP SDK (2.x), over stdio or HTTP.

Used by tests/it/mcp_python.rs. For each protocol revision, connects to agents A and B and exercises
every tool and resource:

* 2025-11-25: `Client(mode="legacy")`, the initialize handshake (and, over HTTP, a session).
* 2026-07-28: `Client(mode="auto")`, which probes `server/discover` and adopts the stateless
  per-request envelope when the server answers it (it falls back to initialize otherwise, so the
  script checks that the discover result was adopted and the negotiated version is 2026-07-28).

Two transports:

* stdio (`--agentseal`, `--data-dir`): spawns `agentseal serve --agent A` and `--agent B` as child
  processes through the SDK's stdio transport.
* streamable HTTP (`--hub URL`): both agents talk to one hub (`agentseal serve --http`) at its
  MCP URL, each with an httpx2 client that sends `Authorization: Bearer <its access token>` on
  every request; the tokens come from the environment (`AGENTSEAL_ACCESS_TOKEN_A`, `_B`), not the
  command line. It also checks the HTTP exchanges themselves (session or stateless, the token on
  every request) and that a request without a token, or with a malformed one, is a 401.

Prints one `PASS  [revision] check` or `FAIL  [revision] check: detail` line per check and exits 1
if any check failed (2 on bad usage).

    python mcp_client.py --agentseal target/debug/agentseal --data-dir D --agent-a A --agent-b B
    AGENTSEAL_ACCESS_TOKEN_A=... AGENTSEAL_ACCESS_TOKEN_B=... \
        python mcp_client.py --hub http://127.0.0.1:7777/mcp --agent-a A --agent-b B
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import INVALID_PARAMS, CallToolResult

EXPECTED_TOOLS = {
    "whoami",
    "sign_action",
    "present_certificate",
    "verify_peer",
    "check_revocation",
    "revoke",
    "new_challenge",
    "delegate",
}
RESOURCES = (
    "agentseal://agent/certificate",
    "agentseal://ca/jwks",
    "agentseal://ca/crl",
    "agentseal://agent/audit",
)

# The `typ` of the JWS each JWS resource holds (docs/formats.md).
JWS_TYP = {"agentseal://agent/certificate": "agent-cert+jwt", "agentseal://ca/crl": "agent-crl+jwt"}

# revision label -> Client(mode=...)
MODES = {"2025-11-25": "legacy", "2026-07-28": "auto"}

# Seconds allowed for one revision's whole run (two servers, a dozen calls).
MODE_TIMEOUT = 120

# Where the HTTP transport finds each agent's access token.
TOKEN_ENV = {"A": "AGENTSEAL_ACCESS_TOKEN_A", "B": "AGENTSEAL_ACCESS_TOKEN_B"}
# The SDK's own default timeouts for its HTTP client (a server may hold an event stream open).
HTTP_TIMEOUT = httpx2.Timeout(30, read=300)


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


async def run_stdio_mode(label: str, mode: str, binary: str, data_dir: str, a: str, b: str, check: Checks) -> None:
    async with (
        Client(server(binary, data_dir, a), mode=mode) as alice,
        Client(server(binary, data_dir, b), mode=mode) as bob,
    ):
        await exercise(label, alice, bob, a, b, check)


async def exercise(label: str, alice: Client, bob: Client, a: str, b: str, check: Checks) -> None:
    """Every tool and resource, with A signing, presenting and revoking and B verifying."""
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

    # tools/list: all eight, each with an input and an output schema.
    listed = await alice.list_tools()
    tools = {t.name: t for t in listed.tools}
    check(label, "tools/list lists 8 tools", len(listed.tools) == 8 and set(tools) == EXPECTED_TOOLS, sorted(tools))
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
    check(label, "resources/list lists the 4 resources", uris == sorted(RESOURCES), uris)
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
        elif ok and uri == "agentseal://agent/audit":
            records = json.loads(texts[0])
            ok = isinstance(records, list) and any(r.get("operation") == "mcp.sign_action" for r in records)
            detail = f"{len(records)} audit records mimeType={mime[0]}"
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


@dataclass
class Exchange:
    """One HTTP request a client made to the hub, and the status and headers it got back."""

    method: str
    rpc: str  # the JSON-RPC method posted ("" for GET, DELETE and replies)
    authorization: str | None
    session: str | None  # Mcp-Session-Id sent
    version: str | None  # MCP-Protocol-Version sent
    status: int
    new_session: str | None  # Mcp-Session-Id received
    challenge: str | None  # WWW-Authenticate received


class Traffic(list[Exchange]):
    """Every HTTP exchange of one client, recorded by an httpx2 response hook."""

    async def record(self, response: httpx2.Response) -> None:
        request = response.request
        rpc = ""
        if request.method == "POST":
            try:
                rpc = json.loads(request.content).get("method", "")
            except (ValueError, AttributeError):
                rpc = "?"
        self.append(
            Exchange(
                method=request.method,
                rpc=rpc,
                authorization=request.headers.get("authorization"),
                session=request.headers.get("mcp-session-id"),
                version=request.headers.get("mcp-protocol-version"),
                status=response.status_code,
                new_session=response.headers.get("mcp-session-id"),
                challenge=response.headers.get("www-authenticate"),
            )
        )

    def summary(self) -> str:
        return ", ".join(f"{x.method} {x.rpc or '-'} {x.status}" for x in self)


@asynccontextmanager
async def hub_client(url: str, mode: str, token: str | None, traffic: Traffic) -> AsyncIterator[Client]:
    """A client of the hub's MCP endpoint `url` sending `Authorization: Bearer <token>` (nothing if
    `token` is None) on every request, each recorded in `traffic`.

    The SDK's streamable HTTP transport takes headers through the httpx2 client it is given."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(
        headers=headers, timeout=HTTP_TIMEOUT, event_hooks={"response": [traffic.record]}
    ) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def run_http_mode(
    label: str, mode: str, url: str, tokens: dict[str, str], a: str, b: str, check: Checks
) -> None:
    traffic = {"A": Traffic(), "B": Traffic()}
    async with (
        hub_client(url, mode, tokens["A"], traffic["A"]) as alice,
        hub_client(url, mode, tokens["B"], traffic["B"]) as bob,
    ):
        await exercise(label, alice, bob, a, b, check)
    # The clients are closed: every exchange, including a session's DELETE, is recorded.
    for who in ("A", "B"):
        await check_exchanges(label, who, url, tokens[who], traffic[who], check)
    await check_refused(label, mode, url, None, check)
    await check_refused(label, mode, url, "not-an-access-token", check)


async def check_exchanges(label: str, who: str, url: str, token: str, traffic: Traffic, check: Checks) -> None:
    """The agent's client sent its token on every request and none was refused; 2025-11-25 ran in
    one session that DELETE ended, 2026-07-28 without any session."""
    authorized = all(x.authorization == f"Bearer {token}" for x in traffic)
    refused = [x for x in traffic if x.status in (401, 403)]
    check(
        label,
        f"agent {who} HTTP: its bearer token on every request, none refused",
        bool(traffic) and authorized and not refused,
        f"{len(traffic)} requests" if authorized and not refused else traffic.summary(),
    )
    if label == "2026-07-28":
        sessions = [x for x in traffic if x.session or x.new_session]
        versions = {x.version for x in traffic}
        ok = not sessions and versions == {label} and all(x.rpc != "initialize" for x in traffic)
        check(
            label,
            f"agent {who} HTTP: stateless, no session, MCP-Protocol-Version {label} on every request",
            ok,
            f"{len(traffic)} requests" if ok else traffic.summary(),
        )
        return
    first, *rest = traffic
    session = first.new_session
    ok = first.rpc == "initialize" and first.status == 200 and session is not None
    ok = ok and bool(rest) and all(x.session == session for x in rest)
    ok = ok and rest[-1].method == "DELETE" and 200 <= rest[-1].status < 300
    check(
        label,
        f"agent {who} HTTP: one session, from initialize, sent on every request, ended by DELETE",
        ok,
        f"DELETE answered {rest[-1].status}" if ok else traffic.summary(),
    )
    if ok and session is not None:
        # rmcp answers the DELETE 202 Accepted, and the SDK, expecting 200 or 204, logs "Session
        # termination failed: 202" on stderr; yet the session is gone, even for its own agent.
        async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "application/json, text/event-stream",
                    "Mcp-Session-Id": session,
                    "MCP-Protocol-Version": label,
                },
            )
        gone = response.status_code == 404
        check(label, f"agent {who} HTTP: the ended session is gone (404)", gone, response.status_code)


async def check_refused(label: str, mode: str, url: str, token: str | None, check: Checks) -> None:
    """Without a valid access token the client cannot even connect: each of its requests is a 401
    whose Bearer challenge points at the protected resource metadata (RFC 6750, RFC 9728)."""
    traffic = Traffic()
    errors: list[BaseException] = []
    try:
        async with hub_client(url, mode, token, traffic):
            pass
    except Exception as e:
        errors = leaves(e)
    metadata = url.removesuffix("/mcp") + "/.well-known/oauth-protected-resource/mcp"
    challenges = [x.challenge or "" for x in traffic]
    ok = bool(errors) and all(isinstance(e, MCPError) for e in errors)
    ok = ok and bool(traffic) and all(x.status == 401 for x in traffic)
    ok = ok and all(c.startswith(f'Bearer resource_metadata="{metadata}"') for c in challenges)
    if token is None:
        # RFC 6750 §3.1: no error code when the request carried no credentials.
        name = "a request without an access token is refused: 401 with a Bearer challenge"
        ok = ok and all("error=" not in c for c in challenges)
    else:
        name = "a malformed access token is refused: 401 invalid_token"
        ok = ok and all('error="invalid_token"' in c for c in challenges)
    kinds = sorted({type(e).__name__ for e in errors})
    detail = f"{traffic.summary()}; challenge: {challenges[0] if challenges else None}; errors: {kinds}"
    if not errors:
        detail = f"connected! {detail}"
    check(label, name, ok, detail)


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
                if args.hub:
                    await run_http_mode(label, mode, args.hub, args.tokens, args.agent_a, args.agent_b, check)
                else:
                    await run_stdio_mode(label, mode, args.agentseal, args.data_dir, args.agent_a, args.agent_b, check)
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
    parser.add_argument("--agentseal", help="stdio: path of the agentseal binary")
    parser.add_argument("--data-dir", help="stdio: installation directory (keyutils key store)")
    parser.add_argument("--hub", help="streamable HTTP: the hub's MCP URL (tokens from $AGENTSEAL_ACCESS_TOKEN_A, _B)")
    parser.add_argument("--agent-a", required=True, help="agent that signs, presents and revokes")
    parser.add_argument("--agent-b", required=True, help="agent that verifies")
    args = parser.parse_args()
    if args.hub:
        if args.agentseal or args.data_dir:
            parser.error("--hub excludes --agentseal and --data-dir")
        missing = [name for name in TOKEN_ENV.values() if not os.environ.get(name)]
        if missing:
            parser.error(f"--hub needs the access tokens in {', '.join(missing)}")
        args.tokens = {who: os.environ[name].strip() for who, name in TOKEN_ENV.items()}
        transport = f"streamable HTTP {args.hub}"
    elif not (args.agentseal and args.data_dir):
        parser.error("give --agentseal and --data-dir (stdio) or --hub (HTTP)")
    else:
        transport = "stdio"
    import importlib.metadata

    print(f"INFO  python {sys.version.split()[0]}, mcp {importlib.metadata.version('mcp')}", flush=True)
    print(f"INFO  transport {transport}", flush=True)
    return anyio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
