"""Respondents' contacts at rest: the contacts' binding of app.encryption (keys from
CIT_CONTACT_KEYS, newest first; the key derived from CIT_SECRET_KEY with the contacts' label).
Stored as bare Fernet tokens (no marker: contacts were encrypted from the start)."""

from __future__ import annotations

from app import encryption
from app.config import Settings
from app.encryption import CONTACTS, new_key

__all__ = ["decrypt", "encrypt", "new_key", "rotate"]


def encrypt(settings: Settings, contact: str) -> str:
    return encryption.encrypt(settings, CONTACTS, contact)


def decrypt(settings: Settings, token: str) -> str | None:
    """The contact in clear; None when no configured key opens it (a key was dropped)."""
    try:
        return encryption.decrypt(settings, CONTACTS, token)
    except encryption.CannotDecrypt:
        return None


def rotate(settings: Settings, token: str) -> str:
    """The token re-encrypted with the first key; CannotDecrypt when no key opens it."""
    return encryption.rotate(settings, CONTACTS, token)
