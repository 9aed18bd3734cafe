"""API models for people (accounts that sign in) and their set-password links."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PersonName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class PersonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PersonName = Field(description="What the person signs in with")
    role: Literal["admin", "researcher", "viewer", "case_manager"]


class PersonRead(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    has_password: bool = Field(description="False until the person used a set-password link")
    disabled_at: datetime | None = Field(description="Set when an admin revoked the person")
    active_sessions: int = Field(description="Browsers signed in right now")
    active_tokens: int


class PasswordLinkRead(BaseModel):
    url: str = Field(description="One-time link: open it to set a password (shown once)")
    expires_at: datetime


class PersonCreated(BaseModel):
    person: PersonRead
    password_link: PasswordLinkRead
