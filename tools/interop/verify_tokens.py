#!/usr/bin/env python3
"""Verify agentseal action tokens with independent JOSE libraries.

  * Ed25519 token (compact JWS, alg EdDSA): PyJWT, key picked from the JWKS by the header `kid`.
  * ML-DSA-65 token (compact JWS, alg ML-DSA-65, JWK kty AKP with `pub`, RFC 9964): jwcrypto,
    key picked by `kid`; plus a labelled cross-check with `cryptography`'s raw ML-DSA-65 verify
    over the JWS signing input (pure ML-DSA, empty context), independent of jwcrypto's JWS code.

Each library must accept the token (signature, `aud`, `exp`/`nbf`, and the protected header's
`typ`), and must reject a copy whose payload was altered after signing. Every check prints one
line (PASS/FAIL); the exit status is 0 only if every check passed, 1 otherwise, 2 on bad usage.

Tokens are given as arguments, or as @FILE to read one from a file:

  python3 verify_tokens.py --jwks jwks.json --aud https://svc.example \
      --ed25519-token @ed.jwt --ml-dsa-65-token @pq.jwt
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from importlib.metadata import version

import jwt  # PyJWT
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws
from jwcrypto import jwt as jc_jwt

TOKEN_TYP = "agent-action+jwt"
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, library: str, what: str, ok: bool, detail: str = "") -> bool:
        status = "PASS" if ok else "FAIL"
        self.failures += 0 if ok else 1
        line = f"{status}  {library:<28} {what}"
        print(f"{line}: {detail}" if detail else line, flush=True)
        return ok


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_token(value: str) -> str:
    if value.startswith("@"):
        with open(value[1:], encoding="utf-8") as f:
            return f.read().strip()
    return value.strip()


def tamper(token: str) -> str:
    """The same token with its payload changed (action -> "drop-database"), signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["action"] = "drop-database"
    altered = b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    assert altered != payload
    return f"{header}.{altered}.{signature}"


def describe(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__name__}: {error}"


# --- (a) Ed25519 with PyJWT -------------------------------------------------------------------


def pyjwt_decode(token: str, jwks: dict, aud: str) -> dict:
    """PyJWT verification: key by kid, EdDSA only, aud/exp/nbf checked, typ checked."""
    kid = jwt.get_unverified_header(token).get("kid")
    if not kid:
        raise ValueError("token header has no kid")
    key_set = jwt.PyJWKSet.from_dict(jwks)  # keeps the keys PyJWT can use (skips AKP)
    key = key_set[kid]  # KeyError if the kid is not in the set
    if key.key_type != "OKP" or key.algorithm_name != "EdDSA":
        raise ValueError(f"kid {kid} is a {key.key_type}/{key.algorithm_name} key")
    decoded = jwt.api_jwt.decode_complete(
        token,
        key,
        algorithms=["EdDSA"],
        audience=aud,
        options={"require": REQUIRED_CLAIMS},
    )
    typ = decoded["header"].get("typ")
    if typ != TOKEN_TYP:
        raise ValueError(f"header typ is {typ!r}, expected {TOKEN_TYP!r}")
    return decoded


def check_ed25519(report: Report, token: str, jwks: dict, aud: str) -> None:
    lib = f"PyJWT {version('PyJWT')}"
    try:
        decoded = pyjwt_decode(token, jwks, aud)
        header, claims = decoded["header"], decoded["payload"]
        report.check(
            lib,
            "accepts Ed25519 token",
            True,
            f"alg={header['alg']} typ={header['typ']} kid={header['kid']} "
            f"aud={claims['aud']} iss={claims['iss']}",
        )
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        report.check(lib, "accepts Ed25519 token", False, describe(e))

    try:
        pyjwt_decode(token, jwks, aud + "/other")
        report.check(lib, "rejects Ed25519 token for another aud", False, "accepted")
    except jwt.InvalidAudienceError as e:
        report.check(lib, "rejects Ed25519 token for another aud", True, describe(e))
    except Exception as e:  # noqa: BLE001
        report.check(lib, "rejects Ed25519 token for another aud", False, describe(e))

    try:
        pyjwt_decode(tamper(token), jwks, aud)
        report.check(lib, "rejects tampered Ed25519 token", False, "accepted")
    except jwt.InvalidSignatureError as e:
        report.check(lib, "rejects tampered Ed25519 token", True, describe(e))
    except Exception as e:  # noqa: BLE001 - rejected, but not for its signature
        report.check(lib, "rejects tampered Ed25519 token", False, "wrong reason: " + describe(e))


# --- (b) ML-DSA-65 with jwcrypto -------------------------------------------------------------


def jwcrypto_decode(token: str, jwks: dict, aud: str) -> jc_jwt.JWT:
    """jwcrypto verification: key by kid, ML-DSA-65 only, aud/exp/nbf checked, typ checked."""
    kid = jwt.get_unverified_header(token).get("kid")
    if not kid:
        raise ValueError("token header has no kid")
    key_set = jc_jwk.JWKSet.from_json(json.dumps(jwks))
    key = key_set.get_key(kid)
    if key is None:
        raise KeyError(f"kid {kid} not in the JWKS")
    if key.get("kty") != "AKP" or key.get("alg") != "ML-DSA-65":
        raise ValueError(f"kid {kid} is not an AKP ML-DSA-65 key")
    if key.thumbprint() != kid:
        raise ValueError("kid is not the RFC 7638/9964 thumbprint of the key")
    checks = {name: None for name in REQUIRED_CLAIMS}
    checks["aud"] = aud
    verified = jc_jwt.JWT(jwt=token, key=key, algs=["ML-DSA-65"], check_claims=checks)
    typ = json.loads(verified.header).get("typ")
    if typ != TOKEN_TYP:
        raise ValueError(f"header typ is {typ!r}, expected {TOKEN_TYP!r}")
    return verified


def cryptography_raw_verify(token: str, jwks: dict) -> None:
    """Cross-check: RFC 9964 says the JWS signature is pure ML-DSA-65 with an empty context over
    ASCII(BASE64URL(header) || '.' || BASE64URL(payload))."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    kid = json.loads(b64url_decode(header_b64))["kid"]
    [jwk] = [k for k in jwks["keys"] if k.get("kid") == kid]
    public = mldsa.MLDSA65PublicKey.from_public_bytes(b64url_decode(jwk["pub"]))
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    public.verify(b64url_decode(signature_b64), signing_input, context=b"")


def check_ml_dsa_65(report: Report, token: str, jwks: dict, aud: str) -> None:
    lib = f"jwcrypto {version('jwcrypto')}"
    if "ML-DSA-65" not in jc_jwk.ImplementedAKPAlgorithms:
        report.check(lib, "supports ML-DSA-65 (AKP keys)", False, "not in this jwcrypto build")
    else:
        try:
            verified = jwcrypto_decode(token, jwks, aud)
            header, claims = json.loads(verified.header), json.loads(verified.claims)
            report.check(
                lib,
                "accepts ML-DSA-65 token",
                True,
                f"alg={header['alg']} typ={header['typ']} kid={header['kid']} "
                f"aud={claims['aud']} iss={claims['iss']}",
            )
        except Exception as e:  # noqa: BLE001
            report.check(lib, "accepts ML-DSA-65 token", False, describe(e))

        try:
            jwcrypto_decode(token, jwks, aud + "/other")
            report.check(lib, "rejects ML-DSA-65 token for another aud", False, "accepted")
        except jc_jwt.JWTInvalidClaimValue as e:
            report.check(lib, "rejects ML-DSA-65 token for another aud", True, describe(e))
        except Exception as e:  # noqa: BLE001
            report.check(lib, "rejects ML-DSA-65 token for another aud", False, describe(e))

        try:
            jwcrypto_decode(tamper(token), jwks, aud)
            report.check(lib, "rejects tampered ML-DSA-65 token", False, "accepted")
        except jc_jws.InvalidJWSSignature as e:
            report.check(lib, "rejects tampered ML-DSA-65 token", True, describe(e))
        except Exception as e:  # noqa: BLE001
            report.check(
                lib, "rejects tampered ML-DSA-65 token", False, "wrong reason: " + describe(e)
            )

    # Not a JOSE library: raw ML-DSA over the signing input, to pin down the exact construction.
    raw = f"cryptography {version('cryptography')} (raw)"
    try:
        cryptography_raw_verify(token, jwks)
        report.check(raw, "ML-DSA-65 signature over JWS signing input, empty context", True)
    except Exception as e:  # noqa: BLE001
        report.check(
            raw, "ML-DSA-65 signature over JWS signing input, empty context", False, describe(e)
        )
    try:
        cryptography_raw_verify(tamper(token), jwks)
        report.check(raw, "rejects tampered ML-DSA-65 token", False, "accepted")
    except InvalidSignature as e:
        report.check(raw, "rejects tampered ML-DSA-65 token", True, describe(e))
    except Exception as e:  # noqa: BLE001
        report.check(raw, "rejects tampered ML-DSA-65 token", False, "wrong reason: " + describe(e))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jwks", required=True, help="JWK Set file (agentseal jwks output)")
    parser.add_argument("--aud", required=True, help="the audience the tokens must name")
    parser.add_argument("--ed25519-token", help="EdDSA token, or @FILE")
    parser.add_argument("--ml-dsa-65-token", help="ML-DSA-65 token, or @FILE")
    args = parser.parse_args()
    if not args.ed25519_token and not args.ml_dsa_65_token:
        parser.error("give --ed25519-token and/or --ml-dsa-65-token")

    with open(args.jwks, encoding="utf-8") as f:
        jwks = json.load(f)
    report = Report()
    if args.ed25519_token:
        check_ed25519(report, read_token(args.ed25519_token), jwks, args.aud)
    if args.ml_dsa_65_token:
        check_ml_dsa_65(report, read_token(args.ml_dsa_65_token), jwks, args.aud)
    print(f"{report.failures} check(s) failed" if report.failures else "all checks passed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
