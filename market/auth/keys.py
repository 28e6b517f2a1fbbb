"""API key format, generation and verification, pure.

A key reads ``fmk_<key_id>_<secret>``: the ``fmk_`` prefix makes leaked keys recognisable to
secret scanners, ``key_id`` (64 random bits, hex) finds the row, and ``secret`` carries 256 random
bits (URL-safe base64). Only HMAC-SHA256(pepper, secret) is stored; a slow password hash buys
nothing for a 256-bit random secret and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "fmk_"
_KEY_RE = re.compile(r"fmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"


def generate_key() -> NewKey:
    return NewKey(key_id=secrets.token_hex(8), secret=secrets.token_urlsafe(32))


def hash_secret(secret: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a presented token into (key_id, secret), or None if it is not a flexmarket key."""
    match = _KEY_RE.fullmatch(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def secret_matches(secret: str, stored_hash: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_secret(secret, pepper), stored_hash)
