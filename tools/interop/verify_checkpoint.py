"""An independent verifier of agentseal audit checkpoints and inclusion proofs.

Written from the specifications, not from agentseal's code:
- C2SP signed-note (https://c2sp.org/signed-note): text, blank line, "— name base64(keyID||sig)";
  Ed25519 key ID = SHA-256(name || 0x0A || 0x01 || public key)[:4], signature over the text.
- C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): origin, size, base64 root.
- RFC 9162 §2.1.3.2: verifying an inclusion proof against a tree head.
- ML-DSA-65 lines (agentseal's, since signed-note assigns ML-DSA no type byte): key ID
  SHA-256(name || 0x0A || 0xFF || "agentseal/ml-dsa-65" || public key)[:4], FIPS 204 signature
  with an empty context over the text.

Usage:
  verify_checkpoint.py --note FILE --origin ORIGIN --ed25519 B64 [--ml-dsa-65 B64]
                       [--leaf B64 --index N --proof B64,B64,...]
  verify_checkpoint.py --origin ORIGIN --jwks CA_JWKS --proof-json PROVE_OUTPUT
(PROVE_OUTPUT is what `agentseal audit prove SEQ` prints: the leaf is SHA-256(0x00 || body).)
Prints "ok:" and the signatures checked, and exits 0 if every given key signed the note and the proof (if any) holds;
prints the reason and exits 1 otherwise.
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa


def fail(why: str) -> None:
    print(why)
    sys.exit(1)


def key_id(name: bytes, type_bytes: bytes, public: bytes) -> bytes:
    return hashlib.sha256(name + b"\n" + type_bytes + public).digest()[:4]


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list, root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--note", help="the signed checkpoint (unless --proof-json has it)")
    parser.add_argument("--origin", required=True)
    parser.add_argument("--ed25519", help="base64 Ed25519 public key (or --jwks)")
    parser.add_argument("--ml-dsa-65", help="base64 ML-DSA-65 public key (or --jwks)")
    parser.add_argument("--jwks", help="the CA's JWK Set: OKP Ed25519 and AKP ML-DSA-65 keys")
    parser.add_argument("--leaf", help="base64 leaf hash")
    parser.add_argument("--index", type=int)
    parser.add_argument("--proof", default="", help="base64 hashes, comma-separated")
    parser.add_argument(
        "--proof-json",
        help="`agentseal audit prove` output: checkpoint, record body (the leaf data), index, proof",
    )
    args = parser.parse_args()

    if args.jwks:
        for jwk in json.load(open(args.jwks))["keys"]:
            raw = base64.urlsafe_b64decode(jwk.get("x", jwk.get("pub", "")) + "==")
            if jwk["kty"] == "OKP" and jwk.get("crv") == "Ed25519":
                args.ed25519 = base64.b64encode(raw).decode()
            elif jwk["kty"] == "AKP" and jwk.get("alg") == "ML-DSA-65":
                args.ml_dsa_65 = base64.b64encode(raw).decode()
    if not args.ed25519:
        fail("no Ed25519 key")
    if args.proof_json:
        proved = json.load(open(args.proof_json))
        note = proved["checkpoint"]
        leaf_data = proved["body"].encode("utf-8")
        args.leaf = base64.b64encode(hashlib.sha256(b"\x00" + leaf_data).digest()).decode()
        args.index = proved["leaf_index"]
        args.proof = ",".join(proved["proof"])
    else:
        note = open(args.note, "rb").read().decode("utf-8")
    if "\n\n" not in note or not note.endswith("\n"):
        fail("not a signed note")
    text, _, signatures = note.rpartition("\n\n")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) != 3:
        fail("checkpoint text is not origin, size, root")
    origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    if origin != args.origin:
        fail("wrong origin")

    name = origin.encode()
    keys = {}
    ed_public = base64.b64decode(args.ed25519)
    keys[key_id(name, b"\x01", ed_public)] = ("Ed25519", ed25519.Ed25519PublicKey.from_public_bytes(ed_public))
    if args.ml_dsa_65:
        ml_public = base64.b64decode(args.ml_dsa_65)
        keys[key_id(name, b"\xff" + b"agentseal/ml-dsa-65", ml_public)] = (
            "ML-DSA-65",
            mldsa.MLDSA65PublicKey.from_public_bytes(ml_public),
        )

    verified = set()
    for line in signatures[:-1].split("\n"):
        if not line.startswith("\u2014 "):
            fail("bad signature line")
        line_name, _, encoded = line[2:].partition(" ")
        raw = base64.b64decode(encoded, validate=True)
        known = keys.get(raw[:4])
        if line_name != origin or known is None:
            continue  # another key's signature: ignored, as the specification says
        algorithm, public = known
        try:
            public.verify(raw[4:], text.encode())
        except InvalidSignature:
            fail(f"{algorithm} signature does not verify")
        verified.add(algorithm)
    wanted = {"Ed25519"} | ({"ML-DSA-65"} if args.ml_dsa_65 else set())
    if verified != wanted:
        fail(f"missing signatures: {sorted(wanted - verified)}")

    if args.leaf is not None:
        leaf = base64.b64decode(args.leaf)
        proof = [base64.b64decode(p) for p in args.proof.split(",") if p]
        if not verify_inclusion(args.index, size, leaf, proof, root):
            fail("inclusion proof does not verify")
    print("ok:", ", ".join(sorted(verified)))


main()
