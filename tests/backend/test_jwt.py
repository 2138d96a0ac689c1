"""JWT bearer tokens through a real backend: signed by a key pair the test generates,
verified against a JWKS file, refused for any wrong part."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import Backend

pytestmark = pytest.mark.slow

ISSUER = "https://iam.lab.example.org/realms/lab"
AUDIENCE = "simbackend"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory,
            signing_key: rsa.RSAPrivateKey) -> Iterator[Backend]:
    folder = tmp_path_factory.mktemp("jwt")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwks = folder / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    server = Backend(folder / "data", args=(
        "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE, "--jwt-jwks", str(jwks),
        "--jwt-role-claim", "realm_access.roles", "--auth-failure-burst", "1000")).start()
    try:
        yield server
    finally:
        server.cleanup()


def token(key: Any, algorithm: str = "RS256", kid: str = "k1", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "f81d4fae", "iat": now,
              "exp": now + 300, "preferred_username": "carol",
              "realm_access": {"roles": ["offline_access", "scientist", "observer"]}}
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def whoami(backend: Backend, bearer: str) -> Any:
    return backend.as_token(bearer).get(backend.url + "/v1/whoami", timeout=30)


def test_a_valid_token_names_its_user_and_highest_role(backend: Backend,
                                                       signing_key: rsa.RSAPrivateKey) -> None:
    answer = whoami(backend, token(signing_key))
    assert answer.json() == {"name": "carol", "role": "scientist", "kind": "jwt"}
    unnamed = whoami(backend, token(signing_key, preferred_username=None))
    assert unnamed.json()["name"] == "f81d4fae"          # the name claim falls back to sub


def test_a_jwt_user_owns_what_they_create(backend: Backend,
                                          signing_key: rsa.RSAPrivateKey) -> None:
    from tests.support import make_archive, loop_experiment

    carol = backend.as_token(token(signing_key))
    put = carol.put(backend.url + "/v1/experiments/carols", data=make_archive(loop_experiment()),
                    headers={"Content-Type": "application/gzip"}, timeout=30)
    assert put.status_code == 201, put.text
    created = carol.post(backend.url + "/v1/simulations", json={"experiment": "carols"},
                         timeout=30).json()
    assert created["owner"] == "carol"
    assert backend.get("/v1/audit?identity=carol").json()["audit"][0]["role"] == "scientist"


def test_wrong_tokens_are_refused(backend: Backend, signing_key: rsa.RSAPrivateKey,
                                  tmp_path: Path) -> None:
    now = int(time.time())
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    wrong = {
        "signature": token(rsa_key()),
        "issuer": token(signing_key, iss="https://evil.example.org"),
        "audience": token(signing_key, aud="someone-else"),
        "expired": token(signing_key, exp=now - 120),
        "not yet valid": token(signing_key, nbf=now + 600),
        "no expiry": token(signing_key, exp=None),
        "unknown kid": token(signing_key, kid="k2"),
        "no role": token(signing_key, realm_access={"roles": ["offline_access"]}),
        "alg none": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300,
                                "preferred_username": "x", "realm_access": {
                                    "roles": ["admin"]}}, None, algorithm="none"),
        "hmac with the public key": _hmac_token(public_pem, now),
        "tampered": _tampered(token(signing_key)),
        "garbage": "not.a.jwt",
    }
    for why, bad in wrong.items():
        answer = whoami(backend, bad)
        assert answer.status_code == 401, (why, answer.text)
        assert answer.json()["error"]["code"] == "unauthenticated", why
        assert bad not in answer.text and bad not in backend.log(), why


def _hmac_token(secret: bytes, now: int) -> str:
    """The classic confusion attack: HS256 keyed with the RSA public key."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 300,
                           "preferred_username": "mallory",
                           "realm_access": {"roles": ["admin"]}}).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _tampered(good: str) -> str:
    """The same signature over claims that now say admin."""
    import base64

    head, body, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["realm_access"]["roles"] = ["admin"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


def test_a_jwks_url_must_be_https(tmp_path: Path) -> None:
    from backend.config import Config
    from backend.tokens import JwtVerifier

    config = Config(data_dir=tmp_path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE,
                    jwt_jwks="http://iam.lab.example.org/certs")
    with pytest.raises(ValueError, match="https"):
        JwtVerifier(config)


def test_failures_of_one_ipv6_host_share_a_bucket() -> None:
    from backend.auth import FailureLimiter

    limiter = FailureLimiter(burst=2, rate=0.001)
    limiter.failed("2001:db8::1")
    limiter.failed("2001:db8::2")       # another address of the same /64
    assert limiter.blocked("2001:db8::ffff") and not limiter.blocked("2001:db9::1")
    assert not limiter.blocked("127.0.0.2")
