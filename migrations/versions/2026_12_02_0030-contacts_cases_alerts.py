"""contacts, cases and alerts: the respondent's contact (encrypted, apart from the story), the
cases that dissatisfying stories with a contact open, alert rules and fired alerts; the
case_manager role; a survey's contact question and case codes

Revision ID: 1002
Revises: 1301
Create Date: 2026-12-02 00:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.models.base

revision: str = "1002"
down_revision: str | None = "1001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLES = "role IN ('admin', 'researcher', 'viewer')"
NEW_ROLES = "role IN ('admin', 'researcher', 'viewer', 'case_manager')"


def _sqlite_swap_role_check(old: str, new: str) -> None:
    """Rewrite the CHECK of `users` in place. A batch rebuild would DROP `users`, and with the
    foreign keys on (they are, in a transaction that cannot turn them off) that deletes every
    token, session and link by ON DELETE CASCADE. Widening or narrowing an IN list does not
    change a stored byte: SQLite documents this edit of the schema text for such changes
    (lang_altertable.html, "otheralter")."""
    bind = op.get_bind()
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar()
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'users'",
        (old, new),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")


def _swap_role_check(old: str, new: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_swap_role_check(old, new)
    else:
        op.drop_constraint(op.f("ck_users_role"), "users", type_="check")
        op.create_check_constraint(op.f("ck_users_role"), "users", new)


def upgrade() -> None:
    _swap_role_check(OLD_ROLES, NEW_ROLES)
    # Plain ADD COLUMN: a batch rebuild of `surveys` would trip the RESTRICT of incidents.
    op.add_column("surveys", sa.Column("contact_question", sa.Text(), nullable=True))
    op.add_column(
        "surveys",
        sa.Column("case_codes", app.models.base.JSONType, server_default="[]", nullable=False),
    )
    op.create_table(
        "incident_contacts",
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('email', 'phone')", name=op.f("ck_incident_contacts_kind")),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_contacts_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["survey_id"],
            ["surveys.id"],
            name=op.f("fk_incident_contacts_survey_id_surveys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("incident_id", name=op.f("pk_incident_contacts")),
    )
    op.create_index(
        op.f("ix_incident_contacts_survey_id"), "incident_contacts", ["survey_id"], unique=False
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("contacted_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'contacted', 'resolved')", name=op.f("ck_cases_status")
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_cases_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["survey_id"],
            ["surveys.id"],
            name=op.f("fk_cases_survey_id_surveys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("incident_id", name=op.f("uq_cases_incident_id")),
    )
    op.create_index("ix_cases_survey_id_status", "cases", ["survey_id", "status"], unique=False)
    op.create_table(
        "case_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_case_notes_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_notes")),
    )
    op.create_index(op.f("ix_case_notes_case_id"), "case_notes", ["case_id"], unique=False)
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("valence", sa.String(length=16), nullable=False),
        sa.Column("group_field", sa.String(length=16), nullable=True),
        sa.Column("group_value", sa.String(length=200), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("measure", sa.String(length=8), nullable=False),
        sa.Column("trigger", sa.String(length=8), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("min_base", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "group_field IS NULL OR group_field IN ('touchpoint', 'channel', 'segment')",
            name=op.f("ck_alert_rules_group_field"),
        ),
        sa.CheckConstraint("measure IN ('share', 'count')", name=op.f("ck_alert_rules_measure")),
        sa.CheckConstraint(
            "period IN ('week', 'month', 'quarter')", name=op.f("ck_alert_rules_period")
        ),
        sa.CheckConstraint(
            "trigger IN ('rise', 'fall', 'change', 'above', 'below')",
            name=op.f("ck_alert_rules_trigger"),
        ),
        sa.CheckConstraint(
            "valence IN ('satisfying', 'dissatisfying')", name=op.f("ck_alert_rules_valence")
        ),
        sa.ForeignKeyConstraint(
            ["survey_id"],
            ["surveys.id"],
            name=op.f("fk_alert_rules_survey_id_surveys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_index(op.f("ix_alert_rules_survey_id"), "alert_rules", ["survey_id"], unique=False)
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("survey_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("fired_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=8), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("base", sa.Integer(), nullable=False),
        sa.Column("share", sa.Float(), nullable=True),
        sa.Column("previous_count", sa.Integer(), nullable=True),
        sa.Column("previous_base", sa.Integer(), nullable=True),
        sa.Column("previous_share", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            name=op.f("fk_alerts_rule_id_alert_rules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["survey_id"],
            ["surveys.id"],
            name=op.f("fk_alerts_survey_id_surveys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("rule_id", "period_start", name="uq_alerts_rule_period"),
    )
    op.create_index(op.f("ix_alerts_fired_at"), "alerts", ["fired_at"], unique=False)
    op.create_index(op.f("ix_alerts_survey_id"), "alerts", ["survey_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_survey_id"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_fired_at"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index(op.f("ix_alert_rules_survey_id"), table_name="alert_rules")
    op.drop_table("alert_rules")
    op.drop_index(op.f("ix_case_notes_case_id"), table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index("ix_cases_survey_id_status", table_name="cases")
    op.drop_table("cases")
    op.drop_index(op.f("ix_incident_contacts_survey_id"), table_name="incident_contacts")
    op.drop_table("incident_contacts")
    op.execute("ALTER TABLE surveys DROP COLUMN case_codes")
    op.execute("ALTER TABLE surveys DROP COLUMN contact_question")
    # Case managers cannot stay under the narrower check: they lose their accounts.
    op.execute("DELETE FROM users WHERE role = 'case_manager'")
    _swap_role_check(NEW_ROLES, OLD_ROLES)
