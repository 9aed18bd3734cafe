"""Survey and invitation logic; queries live here, routes stay thin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal, hash_token
from app.codebooks.service import default_codebook
from app.config import Settings
from app.errors import Conflict, Invalid, NotFound
from app.i18n import translator
from app.models import Codebook, Invitation, Survey
from app.models.base import utcnow
from app.pagination import keyset_page
from app.suggestions.queue import enqueue_rescoring
from app.surveys.schemas import (
    QUESTION_KEYS,
    InvitationBatchCreate,
    InvitationPage,
    InvitationRead,
    PublicSurvey,
    StudyProtocol,
    SurveyCreate,
    SurveyQuestions,
    SurveyRead,
    SurveyUpdate,
)

SurveyState = Literal["open", "not_open", "closed"]


def default_questions(language: str) -> dict[str, str]:
    t = translator(language)
    return {key: t(f"questions.{key}") for key in QUESTION_KEYS}


def _questions(
    language: str, given: SurveyQuestions | None, current: dict[str, str] | None = None
) -> dict[str, str]:
    merged = dict(current or default_questions(language))
    if given is not None:
        merged.update({k: v for k, v in given.model_dump().items() if v is not None})
    return merged


def _slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60] or "survey"
    return f"{base}-{secrets.token_hex(3)}"


class HasOpening(Protocol):
    """What deciding a survey's state needs (a Survey row, or the intake's SurveyRules)."""

    @property
    def status(self) -> str: ...

    @property
    def closes_at(self) -> datetime | None: ...


def survey_state(survey: HasOpening, now: datetime | None = None) -> SurveyState:
    now = now or utcnow()
    if survey.status == "closed" or (survey.closes_at is not None and survey.closes_at <= now):
        return "closed"
    return "open" if survey.status == "open" else "not_open"


def public_link(settings: Settings, path: str) -> str:
    return settings.public_base_url.rstrip("/") + path


def to_read(survey: Survey, settings: Settings) -> SurveyRead:
    return SurveyRead(
        id=survey.id,
        slug=survey.slug,
        title=survey.title,
        introduction=survey.introduction,
        consent_text=survey.consent_text,
        language=survey.language,
        questions=survey.questions,
        touchpoints=survey.choices.get("touchpoints", []),
        channels=survey.choices.get("channels", []),
        status=survey.status,  # type: ignore[arg-type]
        closes_at=survey.closes_at,
        accepting_responses=survey_state(survey) == "open",
        codebook_id=survey.codebook_id,
        double_coding_share=survey.double_coding_share,
        review_order=survey.review_order,  # type: ignore[arg-type]
        study=StudyProtocol.model_validate(survey.study_protocol or {}),
        contact_question=survey.contact_question,
        case_codes=list(survey.case_codes or []),
        link=public_link(settings, f"/s/{survey.slug}"),
        created_at=survey.created_at,
        updated_at=survey.updated_at,
        version=survey.version,
    )


def to_public(survey: Survey, settings: Settings) -> PublicSurvey:
    return PublicSurvey(
        slug=survey.slug,
        title=survey.title,
        introduction=survey.introduction,
        consent_text=survey.consent_text,
        language=survey.language,
        questions=survey.questions,
        touchpoints=survey.choices.get("touchpoints", []),
        channels=survey.choices.get("channels", []),
        max_answer_chars=settings.max_answer_chars,
        contact_question=survey.contact_question,
    )


def _snapshot(survey: Survey) -> dict[str, Any]:
    return {
        "title": survey.title,
        "slug": survey.slug,
        "introduction": survey.introduction,
        "consent_text": survey.consent_text,
        "language": survey.language,
        "questions": survey.questions,
        "choices": survey.choices,
        "status": survey.status,
        "closes_at": survey.closes_at.isoformat() if survey.closes_at else None,
        "codebook_id": survey.codebook_id,
        "double_coding_share": survey.double_coding_share,
        "review_order": survey.review_order,
        "study_protocol": survey.study_protocol,
        "contact_question": survey.contact_question,
        "case_codes": list(survey.case_codes or []),
    }


def create_survey(session: Session, data: SurveyCreate, actor: Principal | None) -> Survey:
    slug = data.slug or _slugify(data.title)
    if session.scalar(select(Survey.id).where(Survey.slug == slug)) is not None:
        raise Conflict(f"a survey with the slug {slug!r} exists already")
    survey = Survey(
        slug=slug,
        title=data.title,
        introduction=data.introduction,
        consent_text=data.consent_text or None,
        language=data.language,
        questions=_questions(data.language, data.questions),
        choices={"touchpoints": data.touchpoints, "channels": data.channels},
        status="open" if data.open else "draft",
        closes_at=data.closes_at,
        codebook_id=_codebook_id(session, data.codebook_id),
        double_coding_share=data.double_coding_share,
        review_order=data.review_order,
        study_protocol=data.study.model_dump(),
        contact_question=data.contact_question or None,
        case_codes=sorted(set(data.case_codes)),
    )
    try:
        with session.begin_nested():  # two admins taking the same slug at once on PostgreSQL
            session.add(survey)
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a survey with the slug {slug!r} exists already") from exc
    audit.record(session, actor, "survey.create", "survey", survey.id, after=_snapshot(survey))
    return survey


def _codebook_id(session: Session, requested: int | None) -> int | None:
    """The requested codebook (which must exist), or the default one, or none yet."""
    if requested is not None:
        if session.get(Codebook, requested) is None:
            raise Invalid(f"codebook {requested} does not exist")
        return requested
    fallback = default_codebook(session)
    return fallback.id if fallback is not None else None


def get_survey(session: Session, survey_id: int) -> Survey:
    survey = session.get(Survey, survey_id)
    if survey is None:
        raise NotFound(f"survey {survey_id} does not exist")
    return survey


def find_by_slug(session: Session, slug: str) -> Survey | None:
    return session.scalar(select(Survey).where(Survey.slug == slug))


def list_surveys(session: Session) -> list[Survey]:
    return list(session.scalars(select(Survey).order_by(Survey.id)))


def update_survey(
    session: Session, survey: Survey, data: SurveyUpdate, actor: Principal | None
) -> Survey:
    before = _snapshot(survey)
    changes = data.model_dump(exclude_unset=True)
    if "title" in changes and data.title is not None:
        survey.title = data.title
    if "introduction" in changes and data.introduction is not None:
        survey.introduction = data.introduction
    if "consent_text" in changes:
        survey.consent_text = data.consent_text or None
    if "contact_question" in changes:
        survey.contact_question = data.contact_question or None
    if "case_codes" in changes and data.case_codes is not None:
        survey.case_codes = sorted(set(data.case_codes))
    if "language" in changes and data.language is not None:
        # Questions the researcher never reworded follow the new language.
        old_defaults = default_questions(survey.language)
        new_defaults = default_questions(data.language)
        survey.questions = {
            k: (new_defaults[k] if v == old_defaults.get(k) else v)
            for k, v in survey.questions.items()
        }
        survey.language = data.language
    if "questions" in changes and data.questions is not None:
        survey.questions = _questions(survey.language, data.questions, survey.questions)
    if "touchpoints" in changes or "channels" in changes:
        survey.choices = {
            "touchpoints": data.touchpoints
            if data.touchpoints is not None
            else survey.choices.get("touchpoints", []),
            "channels": data.channels
            if data.channels is not None
            else survey.choices.get("channels", []),
        }
    if "closes_at" in changes:
        survey.closes_at = data.closes_at
    if "double_coding_share" in changes and data.double_coding_share is not None:
        survey.double_coding_share = data.double_coding_share
    if "review_order" in changes and data.review_order is not None:
        survey.review_order = data.review_order
    if "study" in changes and data.study is not None:
        given = data.study.model_dump(include=data.study.model_fields_set)
        survey.study_protocol = {**(survey.study_protocol or {}), **given}
    codebook_changed = False
    if "codebook_id" in changes:
        new_codebook = _codebook_id(session, data.codebook_id)
        codebook_changed = new_codebook != survey.codebook_id
        survey.codebook_id = new_codebook
    after = _snapshot(survey)
    if after != before:
        survey.version += 1
        session.flush()
        audit.record(
            session, actor, "survey.update", "survey", survey.id, before=before, after=after
        )
    if codebook_changed:
        enqueue_rescoring(session, survey_id=survey.id)
    return survey


def set_status(
    session: Session, survey: Survey, status: Literal["open", "closed"], actor: Principal | None
) -> Survey:
    if survey.status == status:
        return survey
    if status == "open" and survey.closes_at is not None and survey.closes_at <= utcnow():
        raise Invalid("the close date has passed; change closes_at before opening the survey")
    before = _snapshot(survey)
    survey.status = status
    survey.version += 1
    session.flush()
    audit.record(
        session,
        actor,
        f"survey.{status}",
        "survey",
        survey.id,
        before=before,
        after=_snapshot(survey),
    )
    return survey


# Invitations -----------------------------------------------------------------------------------


def _invitation_token(secret_key: str, nonce: str) -> str:
    digest = hmac.new(secret_key.encode(), f"invitation:{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def invitation_status(inv: Invitation, now: datetime | None = None) -> str:
    if inv.used_at is not None:
        return "used"
    if inv.expires_at is not None and inv.expires_at <= (now or utcnow()):
        return "expired"
    return "unused"


def invitation_read(inv: Invitation, settings: Settings) -> InvitationRead:
    token = _invitation_token(settings.secret_key, inv.nonce)
    return InvitationRead(
        id=inv.id,
        survey_id=inv.survey_id,
        link=public_link(settings, f"/i/{token}"),
        status=invitation_status(inv),
        attributes=inv.attributes,  # type: ignore[arg-type]
        created_at=inv.created_at,
        expires_at=inv.expires_at,
        used_at=inv.used_at,
    )


def create_invitations(
    session: Session,
    survey: Survey,
    data: InvitationBatchCreate,
    settings: Settings,
    actor: Principal | None,
) -> list[Invitation]:
    if data.count > settings.max_invitations_per_call:
        raise Invalid(f"at most {settings.max_invitations_per_call} invitations per call")
    if survey_state(survey) == "closed":
        raise Conflict("the survey is closed; invitations to it could not be used")
    rows = []
    for _ in range(data.count):
        nonce = secrets.token_hex(16)
        rows.append(
            Invitation(
                survey_id=survey.id,
                nonce=nonce,
                token_hash=hash_token(_invitation_token(settings.secret_key, nonce)),
                attributes=dict(data.attributes),
                expires_at=data.expires_at,
            )
        )
    session.add_all(rows)
    session.flush()
    audit.record(
        session,
        actor,
        "invitations.create",
        "survey",
        survey.id,
        after={
            "count": data.count,
            "attributes": data.attributes,
            "expires_at": data.expires_at.isoformat() if data.expires_at else None,
            "first_id": rows[0].id,
            "last_id": rows[-1].id,
        },
    )
    return rows


def list_invitations(
    session: Session, survey: Survey, settings: Settings, *, cursor: str | None, limit: int
) -> InvitationPage:
    rows, next_cursor = keyset_page(
        session,
        select(Invitation).where(Invitation.survey_id == survey.id),
        Invitation.id,
        cursor,
        limit,
    )
    return InvitationPage(
        items=[invitation_read(r, settings) for r in rows], next_cursor=next_cursor
    )


def find_invitation(session: Session, token: str) -> Invitation | None:
    return session.scalar(select(Invitation).where(Invitation.token_hash == hash_token(token)))


def claim_invitation(session: Session, invitation: Invitation) -> bool:
    """Mark an invitation used; False when another submission claimed it first."""
    result = session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, Invitation.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
