"""API key format, generation and verification (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.auth.keys import NewKey, generate_key, hash_secret, parse_token, secret_matches

TOKEN_RE = re.compile(r"^fmk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
KEY_ID = "0123456789abcdef"
SECRET = "A" * 20 + "b" * 20 + "_-9"  # 43 URL-safe base64 characters
TOKEN = f"fmk_{KEY_ID}_{SECRET}"


def test_generated_token_format():
    key = generate_key()
    assert TOKEN_RE.fullmatch(key.token)
    assert key.token == f"fmk_{key.key_id}_{key.secret}"
    assert re.fullmatch(r"[0-9a-f]{16}", key.key_id)


def test_secret_carries_at_least_256_bits():
    secret = generate_key().secret
    assert len(secret) == 43
    assert len(secret) * 6 >= 256  # 43 base64url characters carry 258 bits
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)


def test_two_generated_keys_differ():
    a, b = generate_key(), generate_key()
    assert a.key_id != b.key_id
    assert a.secret != b.secret
    assert a.token != b.token


def test_newkey_token():
    assert NewKey(key_id=KEY_ID, secret=SECRET).token == TOKEN


def test_parse_token_round_trip():
    key = generate_key()
    assert parse_token(key.token) == (key.key_id, key.secret)
    assert parse_token(TOKEN) == (KEY_ID, SECRET)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "fmk_",
        f"fmk_{KEY_ID}",
        f"fmk_{KEY_ID}_",
        f"FMK_{KEY_ID}_{SECRET}",  # prefix is case-sensitive
        f"fmx_{KEY_ID}_{SECRET}",
        f"{KEY_ID}_{SECRET}",
        f"fmk_{KEY_ID.upper()}_{SECRET}",  # key id is lower-case hex
        f"fmk_{KEY_ID[:-1]}_{SECRET}",  # 15-char key id
        f"fmk_{KEY_ID}0_{SECRET}",  # 17-char key id
        f"fmk_0123456789abcdeg_{SECRET}",  # non-hex
        f"fmk_{KEY_ID}_{SECRET[:-1]}",  # 42-char secret
        f"fmk_{KEY_ID}_{SECRET}A",  # 44-char secret
        f"fmk_{KEY_ID}_{SECRET[:-1]}=",  # padding
        f"fmk_{KEY_ID}_{SECRET[:-1]}+",  # standard (not URL-safe) base64
        f"fmk_{KEY_ID}_{SECRET[:-1]}/",
        f" fmk_{KEY_ID}_{SECRET}",
        f"fmk_{KEY_ID}_{SECRET} ",
        f"Bearer fmk_{KEY_ID}_{SECRET}",
        f"fmk_{KEY_ID}-{SECRET}",
        f"fmk_{KEY_ID}_{SECRET[:-1]}\u00e9",  # non-ASCII letter
    ],
)
def test_parse_token_rejects_malformed(token):
    assert parse_token(token) is None


def test_parse_token_rejects_trailing_newline():
    assert parse_token(TOKEN + "\n") is None


@given(st.text())
def test_parse_token_never_crashes_on_text(text):
    result = parse_token(text)
    if result is not None:
        key_id, secret = result
        assert re.fullmatch(r"[0-9a-f]{16}", key_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)


@given(
    st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),
)
def test_parse_token_round_trips_any_well_formed_token(key_id, secret):
    assert parse_token(f"fmk_{key_id}_{secret}") == (key_id, secret)


def test_hash_is_hex_sha256_and_deterministic():
    h = hash_secret(SECRET, "pepper-1")
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert hash_secret(SECRET, "pepper-1") == h


def test_hash_known_value():
    # the well-known HMAC-SHA256 example: key "key", message "The quick brown fox jumps over the lazy dog"
    assert hash_secret("The quick brown fox jumps over the lazy dog", "key") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_hash_differs_with_different_pepper():
    assert hash_secret(SECRET, "pepper-1") != hash_secret(SECRET, "pepper-2")


def test_hash_differs_with_different_secret():
    assert hash_secret(SECRET, "pepper") != hash_secret(SECRET[:-1] + "B", "pepper")


def test_secret_matches():
    key = generate_key()
    stored = hash_secret(key.secret, "pepper")
    assert secret_matches(key.secret, stored, "pepper") is True
    assert secret_matches(key.secret, stored, "other-pepper") is False
    assert secret_matches(generate_key().secret, stored, "pepper") is False
    assert secret_matches(key.secret, stored.upper(), "pepper") is False
    assert secret_matches(key.secret, "", "pepper") is False
