"""JWT bearer tokens from a lab's identity provider (Keycloak, EBRAINS: OIDC access tokens).

A token is accepted when its signature verifies with a key of the configured JWKS (a
file, or a URL fetched and cached), and its ``exp``, ``nbf``, ``iss`` and ``aud`` hold.
Only asymmetric algorithms are accepted: a token cannot choose ``none`` or an HMAC
keyed with the public key. The role comes from a configurable claim.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backend.access import ROLES, Identity
from backend.config import Config
from client.settings import is_loopback

if TYPE_CHECKING:
    import jwt

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA"]
#: Seconds of clock difference with the identity provider tolerated on exp and nbf.
LEEWAY = 30
#: What a user's name may be (it becomes owners, audit entries, log lines).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


class JwtVerifier:
    """Verifies JWTs against one issuer, audience and JWKS.

    PyJWT (and cryptography under it) is imported by the methods that use it: ~50 ms,
    which a backend without JWTs configured need not pay at every start.
    """

    def __init__(self, config: Config) -> None:
        import jwt

        self.issuer = config.jwt_issuer
        self.audience = config.jwt_audience
        self.role_claim = config.jwt_role_claim
        self.name_claim = config.jwt_name_claim
        source = config.jwt_jwks
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if source.startswith("http://") and not is_loopback(urlsplit(source).hostname or ""):
            raise ValueError("SIMBACKEND_JWT_JWKS: fetch the signing keys over https (a "
                             "tampered JWKS would let anyone sign tokens)")
        if source.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300, timeout=5)
        else:
            self._keys = jwt.PyJWKSet.from_json(Path(source).expanduser().read_text())

    @classmethod
    def of(cls, config: Config) -> JwtVerifier | None:
        """The verifier ``config`` asks for, None when it names no JWKS."""
        return cls(config) if config.jwt_jwks else None

    def verify(self, token: str) -> Identity | None:
        """The identity a valid token names, None (the reason logged) for any other."""
        import jwt

        try:
            claims = jwt.decode(token, self._key(token), algorithms=ALGORITHMS,
                                audience=self.audience, issuer=self.issuer, leeway=LEEWAY,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            logger.info("JWT refused: %s", exc)
            return None
        name = claim(claims, self.name_claim) or claims.get("sub")
        role = highest_role(claim(claims, self.role_claim))
        if not isinstance(name, str) or not _NAME.fullmatch(name) or role is None:
            logger.info("JWT refused: no usable name (%s) or no role in %r",
                        self.name_claim, self.role_claim)
            return None
        return Identity(name, role, "jwt")

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise jwt.InvalidKeyError(f"no key with kid {kid!r} in the JWKS")


def claim(claims: dict[str, Any], path: str) -> Any:
    """The claim at a dotted ``path`` (``realm_access.roles``), None if absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def highest_role(value: Any) -> str | None:
    """The most privileged role ``value`` (a role, or a list of them) names."""
    named = {value} if isinstance(value, str) else \
        set(v for v in value if isinstance(v, str)) if isinstance(value, list) else set()
    return next((role for role in ROLES if role in named), None)
