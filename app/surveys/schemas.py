"""API models for surveys and invitations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

from app.i18n import SUPPORTED_LANGUAGES
from app.params import IsoAwareDatetime

# The CIT questions a survey asks, each answered in its own field of the stored story
# (../shared/docs/cit-method.md: the standard questions), plus the choice questions.
QUESTION_KEYS = (
    "prompt",
    "occurred",
    "circumstances",
    "what_happened",
    "outcome",
    "valence",
    "touchpoint",
    "channel",
)

Language = Literal["en", "de"]
ReviewOrder = Literal["oldest", "least_certain"]
DoubleCodingShare = Annotated[StrictInt, Field(ge=0, le=100)]
assert set(SUPPORTED_LANGUAGES) == {"en", "de"}

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{2,79}$")]
Choice = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
QuestionText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)
]
AttributeKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,49}$")]
AttributeValue = Annotated[str, StringConstraints(max_length=500)] | int | float | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SurveyQuestions(Strict):
    """Wording of each question; anything left out takes the default of the survey's language."""

    prompt: QuestionText | None = None
    occurred: QuestionText | None = None
    circumstances: QuestionText | None = None
    what_happened: QuestionText | None = None
    outcome: QuestionText | None = None
    valence: QuestionText | None = None
    touchpoint: QuestionText | None = None
    channel: QuestionText | None = None


def _unique(values: list[str] | None) -> list[str] | None:
    if values is None:  # an update that leaves the choices as they are
        return values
    if len({v.casefold() for v in values}) != len(values):
        raise ValueError("choices must be unique")
    return values


StudyText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10_000)]
Criterion = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class StudyProtocol(Strict):
    """What the team writes for the methods section of a CIT paper (Gremler 2004): the study
    report says "yes" to a checklist item only when it is filled here."""

    incident_definition: StudyText | None = Field(
        None, description="The study's own definition of a critical incident"
    )
    inclusion_criteria: Annotated[list[Criterion], Field(max_length=50)] = []
    exclusion_criteria: Annotated[list[Criterion], Field(max_length=50)] = []
    data_collection_method: StudyText | None = Field(
        None, description="How the incidents were collected (questionnaire, interview, ...)"
    )
    interviewer_instructions: StudyText | None = None
    respondent_instructions: StudyText | None = None


ContactQuestion = Annotated[str, StringConstraints(max_length=500)]
CaseCodes = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=100)]], Field(max_length=50)
]


class SurveyCreate(Strict):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    slug: Slug | None = Field(
        None, description="Path of the open link /s/{slug}; generated from the title when left out"
    )
    introduction: Annotated[str, StringConstraints(max_length=5000)] = ""
    consent_text: Annotated[str, StringConstraints(max_length=5000)] | None = Field(
        None, description="When set, respondents must tick a consent box to submit"
    )
    language: Language = "en"
    questions: SurveyQuestions = Field(default_factory=SurveyQuestions)
    touchpoints: Annotated[list[Choice], Field(max_length=50)] = []
    channels: Annotated[list[Choice], Field(max_length=50)] = []
    closes_at: IsoAwareDatetime | None = None
    open: StrictBool = Field(False, description="Open the survey for responses right away")
    codebook_id: StrictInt | None = Field(
        None, description="The codebook its stories are coded with; the default one if left out"
    )
    double_coding_share: DoubleCodingShare = Field(
        0, description="Share of stories (0-100 %) coded blind by two researchers"
    )
    review_order: ReviewOrder = Field(
        "oldest", description="Review queue order: oldest first, or least certain suggestions"
    )
    study: StudyProtocol = Field(default_factory=StudyProtocol)
    contact_question: ContactQuestion | None = Field(
        None,
        description='e.g. "May we contact you about this?": respondents may leave an e-mail '
        "address or phone number (stored encrypted, apart from the story)",
    )
    case_codes: CaseCodes = Field(
        [],
        description="A dissatisfying story with a contact opens a case: always (empty), or "
        "only when its final codes include one of these",
    )

    _unique_touchpoints = field_validator("touchpoints", "channels")(_unique)


class SurveyUpdate(Strict):
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    introduction: Annotated[str, StringConstraints(max_length=5000)] | None = None
    consent_text: Annotated[str, StringConstraints(max_length=5000)] | None = None
    language: Language | None = None
    questions: SurveyQuestions | None = None
    touchpoints: Annotated[list[Choice], Field(max_length=50)] | None = None
    channels: Annotated[list[Choice], Field(max_length=50)] | None = None
    closes_at: IsoAwareDatetime | None = None
    codebook_id: StrictInt | None = None
    double_coding_share: DoubleCodingShare | None = None
    review_order: ReviewOrder | None = None
    study: StudyProtocol | None = Field(
        None, description="Replaces the fields it names; a field set to null (or []) is cleared"
    )
    contact_question: ContactQuestion | None = Field(None, description='"" stops asking')
    case_codes: CaseCodes | None = None

    _unique_touchpoints = field_validator("touchpoints", "channels")(_unique)


class SurveyRead(BaseModel):
    id: int
    slug: str
    title: str
    introduction: str
    consent_text: str | None
    language: str
    questions: dict[str, str]
    touchpoints: list[str]
    channels: list[str]
    status: Literal["draft", "open", "closed"]
    closes_at: datetime | None
    accepting_responses: bool
    codebook_id: int | None
    double_coding_share: int
    review_order: ReviewOrder
    study: StudyProtocol
    contact_question: str | None = None
    case_codes: list[str] = []
    link: str
    created_at: datetime
    updated_at: datetime
    version: int


class InvitationBatchCreate(Strict):
    count: StrictInt = Field(ge=1, description="How many single-use invitations to create")
    expires_at: IsoAwareDatetime | None = None
    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=20)] = Field(
        default_factory=dict,
        description='Respondent attributes copied onto the story, e.g. {"segment": "business"}',
    )


class InvitationRead(BaseModel):
    id: int
    survey_id: int
    link: str
    status: Literal["unused", "used", "expired"]
    attributes: dict[str, str | int | float | bool | None]
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None


class InvitationPage(BaseModel):
    items: list[InvitationRead]
    next_cursor: str | None


class PublicSurvey(BaseModel):
    """What a custom front end needs to render the form; no researcher-only fields."""

    slug: str
    title: str
    introduction: str
    consent_text: str | None
    language: str
    questions: dict[str, str]
    touchpoints: list[str]
    channels: list[str]
    max_answer_chars: int
    contact_question: str | None = None
