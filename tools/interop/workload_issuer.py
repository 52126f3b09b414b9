"""A workload identity issuer for the federation tests (tests/it/federation.rs): what a Kubernetes
API server or GitHub Actions is to a real fleet, in one small process on 127.0.0.1.

It makes its own keys at start (RSA 2048 "rsa-1", as Kubernetes signs; EC P-256 "ec-1"; and an
unpublished RSA key that reuses the kid "rsa-1", for forged signatures), serves its JWKS, and
mints tokens with PyJWT on request:

    GET  /jwks                      the published keys (503 while "down")
    POST /mint {"alg", "claims", "forged"?}   a signed JWT, as text
    POST /down, POST /up            make the JWKS unreachable, or reachable again
    GET  /fetches                   how many times /jwks was served

Prints "ready http://127.0.0.1:PORT" on stdout once listening; exits when stdin closes.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(algorithm, key, kid, alg):
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return jwk


JWKS = {
    "keys": [
        public_jwk(RSAAlgorithm, RSA_KEY, "rsa-1", "RS256"),
        public_jwk(ECAlgorithm, EC_KEY, "ec-1", "ES256"),
    ]
}
state = {"down": False, "fetches": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, media="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/jwks":
            with lock:
                if state["down"]:
                    return self.answer(503, '{"error":"down"}')
                state["fetches"] += 1
            return self.answer(200, json.dumps(JWKS))
        if self.path == "/fetches":
            with lock:
                return self.answer(200, str(state["fetches"]), "text/plain")
        self.answer(404, "{}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path in ("/down", "/up"):
            with lock:
                state["down"] = self.path == "/down"
            return self.answer(200, "{}")
        if self.path != "/mint":
            return self.answer(404, "{}")
        alg = body.get("alg", "RS256")
        if alg == "ES256":
            key, kid = EC_KEY, "ec-1"
        else:
            key, kid = (FORGER if body.get("forged") else RSA_KEY), "rsa-1"
        token = jwt.encode(body["claims"], key, algorithm=alg, headers={"kid": kid})
        self.answer(200, token, "application/jwt")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
