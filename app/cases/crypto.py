"""Encrypting respondents' contacts at rest: Fernet (AES-128-CBC + HMAC-SHA256, from the
`cryptography` package) with MultiFernet for key rotation. Keys come from CIT_CONTACT_KEYS
(newest first); without it, one key is derived from CIT_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings
from app.errors import Invalid

_DERIVATION_LABEL = b"cit contact encryption key v1"


def new_key() -> str:
    return Fernet.generate_key().decode()


def _derived_key(secret_key: str) -> bytes:
    # A labelled hash of the service secret: a separate key, never the secret itself.
    digest = hashlib.sha256(_DERIVATION_LABEL + b"\0" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@lru_cache(maxsize=8)
def _cipher(contact_keys: str, secret_key: str) -> MultiFernet:
    keys = [k.strip() for k in contact_keys.split(",") if k.strip()]
    try:
        fernets = [Fernet(k.encode()) for k in keys] or [Fernet(_derived_key(secret_key))]
    except ValueError:
        raise Invalid(
            "CIT_CONTACT_KEYS must be Fernet keys (32 url-safe base64 bytes), comma-separated"
        ) from None
    return MultiFernet(fernets)


def cipher(settings: Settings) -> MultiFernet:
    return _cipher(settings.contact_keys, settings.secret_key)


def encrypt(settings: Settings, contact: str) -> str:
    return cipher(settings).encrypt(contact.encode()).decode()


def decrypt(settings: Settings, token: str) -> str | None:
    """The contact in clear; None when no configured key opens it (a key was dropped)."""
    try:
        return cipher(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        return None


def rotate(settings: Settings, token: str) -> str:
    """The token re-encrypted with the first key (MultiFernet.rotate)."""
    return cipher(settings).rotate(token.encode()).decode()
