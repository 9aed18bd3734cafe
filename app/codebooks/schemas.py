"""API models for codebooks, their versions and the explicit code changes (rename, merge, split)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, model_validator

# Same shape as nlp.codebook.CODE_KEY_RE, and short enough for incident_codes.code.
CodeKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=100)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ChangeNote = Annotated[str, StringConstraints(max_length=2000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodebookSummary(BaseModel):
    id: int
    key: str
    name: str
    current_version: int
    created_at: datetime
    n_codes: int = Field(description="Active (not retired) codes in the current version")


class CodebookVersionRead(BaseModel):
    codebook_id: int
    key: str
    number: int
    content: dict[str, Any] = Field(description="The whole codebook, in the YAML file format")
    change_note: str
    code_mapping: dict[str, list[str]] | None = Field(
        description="How codings of the previous version map onto this one: {old: [new, ...]}"
    )
    created_by: str
    created_at: datetime


class CodebookRead(CodebookSummary):
    version: CodebookVersionRead


class CodebookWrite(Strict):
    content: dict[str, Any] = Field(
        description="The codebook in the format of codebooks/*.yaml (key, name, codes, ...)"
    )
    change_note: ChangeNote = ""


class _Operation(Strict):
    # `from` is a Python keyword: the attribute is `from_`, the JSON field `from`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Rename(_Operation):
    """Code `from` becomes `to` (a new key); `from` is retired and its codings move to `to`."""

    op: Literal["rename"]
    from_: CodeKey = Field(alias="from")
    to: CodeKey
    label: Label | None = Field(None, description="Label of the new code; default: the old one")

    @model_validator(mode="after")
    def _distinct(self) -> Rename:
        if self.from_ == self.to:
            raise ValueError("'from' and 'to' must differ")
        return self


class Merge(_Operation):
    """Codes `from` are retired; every story carrying any of them carries `into` once."""

    op: Literal["merge"]
    from_: Annotated[list[CodeKey], Field(min_length=1, max_length=100)] = Field(alias="from")
    into: CodeKey
    label: Label | None = Field(
        None,
        description="Label of `into`; needed only when `into` is new (default: the first "
        "source's label)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Merge:
        if len(set(self.from_)) != len(self.from_):
            raise ValueError("'from' lists a code twice")
        if self.into in self.from_:
            raise ValueError("'into' must not be one of 'from'")
        return self


class Split(_Operation):
    """Code `from` is retired; each story carrying it gets the codes `assign` gives it."""

    op: Literal["split"]
    from_: CodeKey = Field(alias="from")
    into: Annotated[list[CodeKey], Field(min_length=2, max_length=100)]
    assign: dict[int, list[CodeKey]] = Field(
        description='Story (incident) id -> the codes of `into` it carries: {"17": ["b"]}'
    )

    @model_validator(mode="after")
    def _distinct(self) -> Split:
        if len(set(self.into)) != len(self.into):
            raise ValueError("'into' lists a code twice")
        if self.from_ in self.into:
            raise ValueError("'into' must not contain 'from'")
        return self


CodeOperation = Annotated[Rename | Merge | Split, Field(discriminator="op")]


class CodebookChange(Strict):
    operations: Annotated[list[CodeOperation], Field(min_length=1, max_length=100)]
    change_note: ChangeNote = ""


# Proposed codes (inductive category building) ---------------------------------------------------

Definition = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
DecisionNote = Annotated[str, StringConstraints(max_length=2000)]


class ProposalCreate(Strict):
    """A new code, proposed while coding `incident_id` (its first example). The proposer may
    use `key` in their own codings at once; it counts once an admin accepts it."""

    incident_id: StrictInt
    key: CodeKey
    label: Label
    definition: Definition = ""


class ProposalRead(BaseModel):
    id: int
    codebook_id: int
    key: str
    label: str
    definition: str
    incident_id: int | None = Field(description="The story it was proposed on (first example)")
    proposed_by: str
    status: Literal["proposed", "accepted", "merged", "rejected"]
    resolved_code: str | None = Field(
        description="accepted: its key in the codebook; merged: the code it was merged into"
    )
    codebook_version_id: int | None = Field(description="accepted: the version that added it")
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    codings: int = Field(description="Codings that use it while it is proposed")
    created_at: datetime


class ProposalAccept(Strict):
    """Accept into a new codebook version; key, label, definition and parent may be edited."""

    key: CodeKey | None = None
    label: Label | None = None
    definition: Definition | None = None
    parent: CodeKey | None = None
    note: DecisionNote = ""


class ProposalMerge(Strict):
    into: CodeKey = Field(description="An active code of the codebook")
    note: DecisionNote = ""


class ProposalReject(Strict):
    note: DecisionNote = Field("", description="Told to the proposer")
