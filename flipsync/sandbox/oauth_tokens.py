"""The OAuth server's records (tokens, codes, device grants) and the access token's shape.

Plain data and pure functions, kept apart so oauth.py reads as the endpoints' rules.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass


@dataclass
class AccessToken:
    """An issued access token: whose, for what, until when."""

    client_id: str
    scope: str
    expires_at: float


@dataclass
class RefreshToken:
    """An issued refresh token; ``valid`` is False once rotated away or revoked."""

    client_id: str
    scope: str
    last_used: float
    valid: bool = True


@dataclass
class AuthCode:
    """A single-use authorization code (with its PKCE challenge, if any)."""

    client_id: str
    redirect_uri: str
    scope: str
    expires_at: float
    code_challenge: str | None
    code_challenge_method: str
    used: bool = False


@dataclass
class DeviceCode:
    """One device-flow grant, from ``device/authorize`` to its last poll."""

    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    last_poll: float | None = None
    status: str = "pending"  # pending | approved | denied | consumed


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs and PKCE use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def normalize_user_code(user_code: str) -> str:
    """A user code as typed (any case, dashes, blanks) reduced to its letters."""
    return "".join(ch for ch in user_code.upper() if ch.isalnum())


def jwt_access_token(
    signing_key: bytes, lifetime_seconds: int, client_id: str, scope: str, now: float
) -> str:
    """A JWT-shaped access token: decodable header and payload with exp/iat/sub/cid."""
    header = {"kid": "flipsync-sandbox", "alg": "HS256", "typ": "JWT"}
    payload = {
        "ver": 1,
        "jti": "AT." + secrets.token_urlsafe(24),
        "iss": "https://identity.constantcontact.com/oauth2/sandbox",
        "aud": "https://api.cc.email/v3",
        "iat": int(now),
        "exp": int(now) + lifetime_seconds,
        "cid": client_id,
        "uid": "sandbox-user",
        "scp": scope.split(),
        "sub": "sandbox-user@example.com",
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = hmac.new(signing_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)
