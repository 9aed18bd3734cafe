"""All tables, imported here so that Alembic and the services see one metadata."""

from app.models.alerts import Alert, AlertRule
from app.models.audit import AuditEvent
from app.models.auth import ROLES, ApiToken, PasswordLink, User, WebSession
from app.models.base import Base
from app.models.cases import CASE_STATUSES, Case, CaseNote, IncidentContact
from app.models.codebooks import PROPOSAL_STATUSES, Codebook, CodebookVersion, CodeProposal
from app.models.coding import JOB_STATUSES, IncidentCode, Job, NlpModel, Suggestion
from app.models.imports import ImportRun
from app.models.incidents import INCIDENT_STATUSES, VALENCES, Incident
from app.models.reports import (
    ReportCodeDay,
    ReportCodeDayBy,
    ReportCodeDayDetail,
    ReportCodeDelta,
    ReportCodeGrouping,
    ReportCodeMonth,
    ReportCodeMonthBy,
    ReportCodeMonthDetail,
    ReportGeneration,
    ReportStoryDay,
    ReportStoryDayBy,
    ReportStoryDayDetail,
    ReportStoryDelta,
    ReportStoryGrouping,
    ReportStoryMonth,
    ReportStoryMonthBy,
    ReportStoryMonthDetail,
)
from app.models.reviews import (
    Assignment,
    Coding,
    CodingCode,
    CodingSpan,
    Notification,
    ReviewLease,
)
from app.models.surveys import SURVEY_STATUSES, Invitation, Survey
from app.models.webhooks import (
    DELIVERY_STATUSES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)

__all__ = [
    "CASE_STATUSES",
    "DELIVERY_STATUSES",
    "INCIDENT_STATUSES",
    "JOB_STATUSES",
    "PROPOSAL_STATUSES",
    "ROLES",
    "SURVEY_STATUSES",
    "VALENCES",
    "Alert",
    "AlertRule",
    "ApiToken",
    "Assignment",
    "AuditEvent",
    "Base",
    "Case",
    "CaseNote",
    "CodeProposal",
    "Codebook",
    "CodebookVersion",
    "Coding",
    "CodingCode",
    "CodingSpan",
    "ImportRun",
    "Incident",
    "IncidentCode",
    "IncidentContact",
    "Invitation",
    "Job",
    "NlpModel",
    "Notification",
    "PasswordLink",
    "ReportCodeDay",
    "ReportCodeDayBy",
    "ReportCodeDayDetail",
    "ReportCodeDelta",
    "ReportCodeGrouping",
    "ReportCodeMonth",
    "ReportCodeMonthBy",
    "ReportCodeMonthDetail",
    "ReportGeneration",
    "ReportStoryDay",
    "ReportStoryDayBy",
    "ReportStoryDayDetail",
    "ReportStoryDelta",
    "ReportStoryGrouping",
    "ReportStoryMonth",
    "ReportStoryMonthBy",
    "ReportStoryMonthDetail",
    "ReviewLease",
    "Suggestion",
    "Survey",
    "User",
    "WebSession",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEvent",
    "WebhookSubscription",
]
