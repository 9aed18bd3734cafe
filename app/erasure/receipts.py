"""Withdrawal receipt codes: derived from the submission, shown once to the respondent.

The code is an HMAC of the survey and the submission key under CIT_SECRET_KEY, so a repeated
submission (refresh, retry) shows the same code without a query, and the database holds only
its SHA-256 (`incidents.receipt_hash`): a leaked table reveals no code, and a code reveals no
story, only the right to withdraw it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_GROUP = 4
_NOT_CODE = re.compile(r"[^A-Z2-7]")


def receipt_code(secret_key: str, survey_id: int, submission_key: str) -> str:
    """16 characters (80 bits) in groups of four: `ABCD-EFGH-JKLM-NPQR`."""
    digest = hmac.new(
        secret_key.encode(), f"receipt:{survey_id}:{submission_key}".encode(), hashlib.sha256
    ).digest()
    code = base64.b32encode(digest[:10]).decode()
    return "-".join(code[i : i + _GROUP] for i in range(0, len(code), _GROUP))


def normalise(code: str) -> str:
    """What the respondent typed, without case, spaces or dashes (and 0/1 read as O/I)."""
    return _NOT_CODE.sub("", code.upper().replace("0", "O").replace("1", "I"))


def receipt_hash(code: str) -> str:
    return hashlib.sha256(normalise(code).encode()).hexdigest()
