"""An agent process that needs no pasted token: it trades the identity its platform gave it
(a Kubernetes service-account token, a GitHub Actions OIDC token) for an agentseal access token,
then uses the hub's MCP tools with the official `mcp` Python SDK.

    python workload_agent.py --hub https://hub.example.com \\
        --token-file /var/run/secrets/agentseal/token        # Kubernetes projected token
    python workload_agent.py --hub https://hub.example.com --github-actions   # in a job
    python workload_agent.py --hub ... --token-file ... --sdk-oauth   # the SDK's own OAuth

What it does, in the order the MCP authorization specification gives:
1. asks the MCP endpoint without a token; the 401's WWW-Authenticate names the protected
   resource metadata (RFC 9728), whose `authorization_servers` names the hub;
2. reads the authorization server metadata (RFC 8414) for the token endpoint and checks that it
   takes token exchange;
3. exchanges the workload's JWT (RFC 8693) for an access token;
4. calls `whoami` and `sign_action` over streamable HTTP with that token.

With `--sdk-oauth`, the SDK does steps 1-3 itself: its `PrivateKeyJWTOAuthProvider` (the MCP
client credentials extension) discovers the hub on the first 401 and sends the workload's JWT as
an RFC 7523 client assertion, then retries with the token it got (and again when it expires).

Prints one JSON object: the discovery, who the agent is, and the signed action token. Needs
`mcp` 2.x (which brings httpx2); see docs/federation.md. Exits 1 with the hub's answer on a
refusal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from urllib.parse import quote

import base64

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import PrivateKeyJWTOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class Refused(Exception):
    pass


async def discover(http: httpx2.AsyncClient, mcp_url: str) -> dict:
    """The token endpoint of the hub serving `mcp_url`, found as a spec-following client does."""
    probe = await http.post(
        mcp_url,
        json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    if probe.status_code != 401:
        raise Refused(f"expected 401 from {mcp_url} without a token, got {probe.status_code}")
    found = re.search(r'resource_metadata="([^"]+)"', probe.headers.get("www-authenticate", ""))
    if not found:
        raise Refused("the 401 names no resource_metadata")
    resource = (await http.get(found.group(1))).raise_for_status().json()
    issuer = resource["authorization_servers"][0]
    metadata_url = issuer.rstrip("/") + "/.well-known/oauth-authorization-server"
    server = (await http.get(metadata_url)).raise_for_status().json()
    if server["issuer"] != issuer:
        raise Refused(f"metadata issuer {server['issuer']} is not {issuer} (RFC 8414 §3.3)")
    if TOKEN_EXCHANGE not in server.get("grant_types_supported", []):
        raise Refused("the authorization server does not take token exchange")
    return {
        "resource": resource["resource"],
        "resource_metadata": found.group(1),
        "issuer": issuer,
        "token_endpoint": server["token_endpoint"],
        "scopes_supported": server.get("scopes_supported", []),
    }


async def github_actions_token(http: httpx2.AsyncClient, audience: str) -> str:
    """The job's OIDC token for `audience` (needs `permissions: id-token: write`)."""
    url = os.environ["ACTIONS_ID_TOKEN_REQUEST_URL"]
    bearer = os.environ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]
    answer = await http.get(
        f"{url}&audience={quote(audience, safe='')}",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    return answer.raise_for_status().json()["value"]


async def exchange(http: httpx2.AsyncClient, found: dict, workload_token: str, scope: str | None) -> dict:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": workload_token,
        "subject_token_type": JWT_TOKEN_TYPE,
        "resource": found["resource"],
    }
    if scope:
        form["scope"] = scope
    answer = await http.post(found["token_endpoint"], data=form)
    body = answer.json()
    if answer.status_code != 200:
        raise Refused(f"token endpoint answered {answer.status_code}: {json.dumps(body)}")
    return body


class MemoryTokens:
    """Where the SDK keeps the access token between calls (a real agent might keep it on disk)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def unverified_subject(jwt: str) -> str:
    """The `sub` of the workload's JWT: the client id the SDK registers it under (RFC 7523 §3)."""
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def sdk_oauth(hub: str, mcp_url: str, token_file: str, scope: str | None) -> OAuthClientProvider:
    """The SDK's client credentials flow with the workload's JWT as client assertion; the file is
    read at each exchange (the platform refreshes it)."""

    async def assertion(audience: str) -> str:
        # The projected token's audience is fixed at projection: the hub's issuer identifier.
        with open(token_file, encoding="utf-8") as f:
            return f.read().strip()

    with open(token_file, encoding="utf-8") as f:
        client_id = unverified_subject(f.read().strip())
    return PrivateKeyJWTOAuthProvider(
        server_url=mcp_url,
        storage=MemoryTokens(),
        client_id=client_id,
        assertion_provider=assertion,
        scope=scope,
        issuer=hub.rstrip("/"),
    )


async def act(client: Client, args: argparse.Namespace) -> tuple[dict, str] | None:
    who = (await client.call_tool("whoami", {})).structured_content
    signed = await client.call_tool(
        "sign_action",
        {"action": args.action, "audience": args.audience, "arguments": {"ref": "main"}},
    )
    if signed.is_error:
        print(f"workload_agent: sign_action refused: {signed.structured_content}", file=sys.stderr)
        return None
    return who, signed.structured_content["token"]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", required=True, help="the hub's base URL, e.g. https://hub.example.com")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--token-file", help="a file holding the workload's JWT (read at each exchange)")
    source.add_argument("--github-actions", action="store_true", help="ask GitHub Actions for the job's OIDC token")
    parser.add_argument("--scope", help="scopes to ask for (default: what the trust rule grants)")
    parser.add_argument("--action", default="deploy", help="the action to sign")
    parser.add_argument("--audience", default="https://ci.example.com", help="who will act on the token")
    parser.add_argument("--sdk-oauth", action="store_true", help="let the SDK's OAuth client find the hub and exchange the token file")
    args = parser.parse_args()

    mcp_url = args.hub.rstrip("/") + "/mcp"
    timeout = httpx2.Timeout(30)
    if args.sdk_oauth:
        if not args.token_file:
            parser.error("--sdk-oauth reads the workload's JWT from --token-file")
        auth = sdk_oauth(args.hub, mcp_url, args.token_file, args.scope)
        async with httpx2.AsyncClient(auth=auth, timeout=timeout) as http:
            async with Client(streamable_http_client(mcp_url, http_client=http), mode="auto") as client:
                done = await act(client, args)
        if done is None:
            return 1
        print(json.dumps({"whoami": done[0], "action_token": done[1]}))
        return 0
    try:
        async with httpx2.AsyncClient(timeout=timeout) as http:
            found = await discover(http, mcp_url)
            if args.github_actions:
                workload_token = await github_actions_token(http, found["issuer"])
            else:
                with open(args.token_file, encoding="utf-8") as f:
                    workload_token = f.read().strip()
            issued = await exchange(http, found, workload_token, args.scope)
    except (Refused, httpx2.HTTPError) as error:
        print(f"workload_agent: {error}", file=sys.stderr)
        return 1

    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with Client(streamable_http_client(mcp_url, http_client=http), mode="auto") as client:
            done = await act(client, args)
    if done is None:
        return 1
    who, action_token = done
    print(
        json.dumps(
            {
                "discovery": found,
                "access_token": {k: issued[k] for k in ("token_type", "expires_in", "scope", "issued_token_type") if k in issued},
                "whoami": who,
                "action_token": action_token,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
