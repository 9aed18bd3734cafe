"""All tables, imported here so that Alembic and the services see one metadata."""

from app.models.audit import AuditEvent
from app.models.auth import ROLES, ApiToken, User
from app.models.base import Base
from app.models.codebooks import Codebook, CodebookVersion
from app.models.coding import JOB_STATUSES, IncidentCode, Job, NlpModel, Suggestion
from app.models.imports import ImportRun
from app.models.incidents import INCIDENT_STATUSES, VALENCES, Incident
from app.models.reports import (
    ReportCodeDay,
    ReportCodeDayDetail,
    ReportStoryDay,
    ReportStoryDayDetail,
)
from app.models.reviews import Assignment, Coding, CodingCode, ReviewLease
from app.models.surveys import SURVEY_STATUSES, Invitation, Survey

__all__ = [
    "INCIDENT_STATUSES",
    "JOB_STATUSES",
    "ROLES",
    "SURVEY_STATUSES",
    "VALENCES",
    "ApiToken",
    "Assignment",
    "AuditEvent",
    "Base",
    "Codebook",
    "CodebookVersion",
    "Coding",
    "CodingCode",
    "ImportRun",
    "Incident",
    "IncidentCode",
    "Invitation",
    "Job",
    "NlpModel",
    "ReportCodeDay",
    "ReportCodeDayDetail",
    "ReportStoryDay",
    "ReportStoryDayDetail",
    "ReviewLease",
    "Suggestion",
    "Survey",
    "User",
]
