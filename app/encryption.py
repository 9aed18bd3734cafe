"""Encrypting values at rest that the service must read back (respondents' contacts, webhook
signing secrets): Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package) with
MultiFernet for key rotation.

Each kind of value (a `Purpose`) has keys of its own: a setting of Fernet keys, newest first
(the first encrypts, every one decrypts), and always, last, a key derived from CIT_SECRET_KEY with
the purpose's own label. Without the setting that derived key encrypts; with it, the derived key
still opens what it encrypted earlier, so that moving from the derived key to keys of one's own is
the ordinary rotation (set the keys, re-encrypt, see README "Operations"). One purpose's keys
never open another's values."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from app.config import Settings


@dataclass(frozen=True)
class Purpose:
    what: str  # in messages: "contact", "webhook secret"
    setting: str  # the Settings field with the keys
    label: bytes  # derivation label of the key made from CIT_SECRET_KEY
    new_key_command: str  # prints a new key for the setting
    # Written in front of every stored token: a value with it is encrypted, one without is not
    # (so a migration never encrypts twice nor takes ciphertext for clear text). "" : bare tokens.
    marker: str = ""

    @property
    def env(self) -> str:
        return f"CIT_{self.setting.upper()}"


CONTACTS = Purpose("contact", "contact_keys", b"cit contact encryption key v1", "cit cases new-key")
WEBHOOK_SECRETS = Purpose(
    "webhook secret",
    "webhook_secret_keys",
    b"cit webhook secret encryption key v1",
    "cit webhooks new-key",
    marker="enc:v1:",
)


class KeysInvalid(ValueError):
    """A key setting that is not a list of Fernet keys."""


class CannotDecrypt(ValueError):
    """No configured key opens the value, or it is not an encrypted value of this purpose. The
    message says what to fix and never carries the value."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(value: str, purpose: Purpose) -> list[Fernet]:
    try:
        return [Fernet(k.strip().encode()) for k in value.split(",") if k.strip()]
    except ValueError:
        raise KeysInvalid(
            f"{purpose.env} must be Fernet keys (32 url-safe base64 bytes), comma-separated, "
            f"newest first; `{purpose.new_key_command}` prints one"
        ) from None


def _derived_key(secret_key: str, label: bytes) -> bytes:
    # A labelled hash of the service secret: a separate key, never the secret itself.
    digest = hashlib.sha256(label + b"\0" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest)


@lru_cache(maxsize=16)
def _cipher(keys: str, secret_key: str, purpose: Purpose) -> MultiFernet:
    return MultiFernet(
        [*parse_keys(keys, purpose), Fernet(_derived_key(secret_key, purpose.label))]
    )


def cipher(settings: Settings, purpose: Purpose) -> MultiFernet:
    return _cipher(getattr(settings, purpose.setting), settings.secret_key, purpose)


def is_encrypted(purpose: Purpose, stored: str) -> bool:
    """Whether a stored value carries the purpose's marker (for purposes that have one)."""
    return bool(purpose.marker) and stored.startswith(purpose.marker)


def encrypt(settings: Settings, purpose: Purpose, clear: str) -> str:
    return purpose.marker + cipher(settings, purpose).encrypt(clear.encode()).decode()


def _token(purpose: Purpose, stored: str) -> bytes:
    if purpose.marker and not stored.startswith(purpose.marker):
        raise CannotDecrypt(
            f"the stored {purpose.what} is not encrypted (no {purpose.marker!r} marker): "
            "the database is behind the migrations (`cit db upgrade`)"
        )
    return stored[len(purpose.marker) :].encode()


def _unopened(purpose: Purpose) -> CannotDecrypt:
    return CannotDecrypt(
        f"no key of {purpose.env} (nor the one derived from CIT_SECRET_KEY) opens the stored "
        f"{purpose.what}: a key it was encrypted with was dropped or changed"
    )


def decrypt(settings: Settings, purpose: Purpose, stored: str) -> str:
    """The value in clear; CannotDecrypt when no configured key opens it."""
    try:
        return cipher(settings, purpose).decrypt(_token(purpose, stored)).decode()
    except InvalidToken:
        raise _unopened(purpose) from None


def rotate(settings: Settings, purpose: Purpose, stored: str) -> str:
    """The value re-encrypted with the first key (MultiFernet.rotate); CannotDecrypt when no
    configured key opens it."""
    try:
        token = cipher(settings, purpose).rotate(_token(purpose, stored))
    except InvalidToken:
        raise _unopened(purpose) from None
    return purpose.marker + token.decode()
