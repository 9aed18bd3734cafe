"""Webhook signing secrets at rest: encrypted in the database (read with plain SQL), shown once,
signed with after a key rotation and a re-encryption, and a wrong key fails the attempt with a
clear reason and writes nothing half-way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, column, insert, inspect, select, text
from sqlalchemy import table as sa_table
from typer.testing import CliRunner

from app import encryption, migrate
from app.cli import cli
from app.config import Settings, get_settings
from app.db import create_db_engine, make_sessionmaker
from app.errors import Invalid
from app.models import Survey, WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.models.base import JSONType, UTCDateTime, utcnow
from app.webhooks import service
from app.webhooks.delivery import WebhookDispatcher, verify_signature
from app.webhooks.schemas import WebhookCreate
from tests.conftest import TEST_SECRET
from tests.db.test_migrations import scratch_url  # noqa: F401 (a fixture)
from tests.webhooks.conftest import Receiver

OLD_KEY = encryption.new_key()
NEW_KEY = encryption.new_key()
OTHER_KEY = encryption.new_key()
MARKER = encryption.WEBHOOK_SECRETS.marker
CANNOT_SIGN = (
    "cannot sign: no key of CIT_WEBHOOK_SECRET_KEYS (nor the one derived from CIT_SECRET_KEY) "
    "opens the stored webhook secret"
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The service's settings with a webhook key of the operator's own."""
    return settings.model_copy(update={"webhook_secret_keys": OLD_KEY})


def _stored(db: Callable[[], Any]) -> dict[int, str]:
    """The column as the database holds it, by plain SQL (no model, no decryption)."""
    with db() as session:
        rows = session.execute(
            text("SELECT id, secret_ciphertext FROM webhook_subscriptions ORDER BY id")
        ).all()
    return {int(i): str(v) for i, v in rows}


def _subscribe(
    client: TestClient, admin: dict[str, str], receiver: Receiver, **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url(), "events": ["story.received"], **body},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    created = dict(response.json())
    receiver.secrets["/hook"] = created["secret"]
    return created


def _submit(client: TestClient, survey: Survey, key: str) -> None:
    response = client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "The bag came back.", "valence": "satisfying", "submission_id": key},
    )
    assert response.status_code == 201, response.text


def test_the_stored_column_never_holds_the_secret(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    generated = _subscribe(client, admin, receiver)
    given = _subscribe(client, admin, receiver, secret="given-secret-0123456789")
    rotated = client.patch(
        f"/api/v1/webhooks/{generated['id']}", json={"rotate_secret": True}, headers=admin
    ).json()
    receiver.secrets["/hook"] = rotated["secret"]
    client.delete(f"/api/v1/webhooks/{given['id']}", headers=admin)
    _submit(client, survey, "secret-1")
    dispatcher().drain()
    assert len(receiver.delivered()) == 1 and receiver.bad_signatures == []

    secrets = [generated["secret"], given["secret"], rotated["secret"]]
    stored = _stored(db)
    assert list(stored) == [generated["id"]]
    value = stored[generated["id"]]
    assert value.startswith(MARKER) and all(s not in value for s in secrets)
    # Under the operator's key (whatever CIT_SECRET_KEY is), the newest secret.
    operator = Settings(secret_key="another-secret-key-0123", webhook_secret_keys=OLD_KEY)
    assert encryption.decrypt(operator, encryption.WEBHOOK_SECRETS, value) == rotated["secret"]
    # Nor in the audit trail, the delivery log, the later answers or the log lines.
    with db() as session:
        audit = session.execute(text("SELECT * FROM audit_events")).all()
        attempts = session.execute(text("SELECT * FROM webhook_attempts")).all()
    assert {a.action for a in audit} >= {"webhook.create", "webhook.update", "webhook.delete"}
    later = [
        client.get("/api/v1/webhooks", headers=admin).text,
        client.get(f"/api/v1/webhooks/{generated['id']}", headers=admin).text,
        client.get(f"/api/v1/webhooks/{generated['id']}/deliveries", headers=admin).text,
        client.patch(
            f"/api/v1/webhooks/{generated['id']}", json={"active": True}, headers=admin
        ).text,
    ]
    for secret in secrets:
        assert secret not in repr(audit) and secret not in repr(attempts)
        assert all(secret not in answer for answer in later)
        assert secret not in caplog.text


def test_deliveries_sign_with_the_secret_shown_at_creation(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
) -> None:
    created = _subscribe(client, admin, receiver)
    _submit(client, survey, "signed-1")
    dispatcher().drain()
    [request] = receiver.delivered()
    assert verify_signature(created["secret"], request.headers["cit-signature"], request.body)
    stored = _stored(db)[created["id"]]
    assert not verify_signature(stored, request.headers["cit-signature"], request.body)


def test_key_rotation_keeps_deliveries_working_and_reencrypts(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    survey: Survey,
    db: Callable[[], Any],
    settings: Settings,
    dispatcher: Callable[..., WebhookDispatcher],
) -> None:
    created = _subscribe(client, admin, receiver)
    before = _stored(db)[created["id"]]
    rotation = settings.model_copy(update={"webhook_secret_keys": f"{NEW_KEY},{OLD_KEY}"})
    new_only = settings.model_copy(update={"webhook_secret_keys": NEW_KEY})

    # Step 1: the new key in front, the old one kept: the old ciphertext still signs.
    _submit(client, survey, "rotate-1")
    dispatcher(webhook_secret_keys=f"{NEW_KEY},{OLD_KEY}").drain()
    assert len(receiver.delivered()) == 1 and receiver.bad_signatures == []

    # Step 2: re-encrypt under the new key (the subscription itself is unchanged).
    with db() as session:
        assert service.rotate_keys(session, rotation) == 1
    after = _stored(db)[created["id"]]
    read = client.get(f"/api/v1/webhooks/{created['id']}", headers=admin).json()
    assert read["updated_at"] == created["updated_at"]
    assert after != before and after.startswith(MARKER) and created["secret"] not in after
    with db() as session:
        hook = session.get(WebhookSubscription, created["id"])
        assert hook is not None and service.signing_secret(new_only, hook) == created["secret"]

    # Step 3: the old key dropped: deliveries still go out, correctly signed.
    _submit(client, survey, "rotate-2")
    dispatcher(webhook_secret_keys=NEW_KEY).drain()
    assert len(receiver.delivered()) == 2 and receiver.bad_signatures == []
    # ... and the old key alone opens it no more.
    with db() as session, pytest.raises(encryption.CannotDecrypt):
        service.signing_secret(settings, session.get(WebhookSubscription, created["id"]))


def test_moving_from_the_derived_key_to_keys_of_ones_own(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    """Without CIT_WEBHOOK_SECRET_KEYS the key derived from CIT_SECRET_KEY encrypts; setting
    the keys later and re-encrypting is the ordinary rotation (the derived key still opens)."""
    derived = settings.model_copy(update={"webhook_secret_keys": ""})
    with db() as session:
        created = service.create_subscription(
            session,
            derived,
            WebhookCreate.model_validate({"url": receiver.url(), "events": ["story.final"]}),
            None,
            allow_private=True,
        )
    own = settings.model_copy(update={"webhook_secret_keys": NEW_KEY})
    with db() as session:
        assert service.rotate_keys(session, own) == 1
    # Re-encrypted under the new key: it opens with it even where CIT_SECRET_KEY differs.
    elsewhere = own.model_copy(update={"secret_key": "another-secret-key-0123"})
    with db() as session:
        hook = session.get(WebhookSubscription, created.id)
        assert hook is not None
        assert service.signing_secret(elsewhere, hook) == created.secret
    # The key derived for webhook secrets is not the contacts' one (labels of their own).
    contact = encryption.encrypt(derived, encryption.CONTACTS, created.secret)
    with pytest.raises(encryption.CannotDecrypt):
        encryption.decrypt(derived, encryption.WEBHOOK_SECRETS, MARKER + contact)


def test_a_wrong_key_fails_the_attempt_with_a_clear_reason(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = _subscribe(client, admin, receiver)
    stored = _stored(db)
    _submit(client, survey, "wrong-key-1")
    caplog.set_level(logging.INFO)
    dispatcher(webhook_secret_keys=OTHER_KEY, webhook_max_attempts=1).drain()

    assert receiver.requests == []  # nothing unsigned (or signed with anything else) went out
    with db() as session:
        delivery = session.scalars(select(WebhookDelivery)).one()
        attempt = session.scalars(select(WebhookAttempt)).one()
        assert delivery.status == "failed" and delivery.last_error is not None
        assert delivery.last_error.startswith(CANNOT_SIGN)
        assert attempt.outcome == "error" and attempt.error == delivery.last_error
        delivery_id = delivery.id
    assert _stored(db) == stored  # the subscription's secret is as it was
    assert CANNOT_SIGN in caplog.text and created["secret"] not in caplog.text
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)

    # Malformed keys (settings that skipped validation) fail the same way, with what to fix.
    redeliver = f"/api/v1/webhooks/{created['id']}/deliveries/{delivery_id}/redeliver"
    assert client.post(redeliver, headers=admin).status_code == 200
    dispatcher(webhook_secret_keys="not-a-key", webhook_max_attempts=1).drain()
    with db() as session:
        error = session.get(WebhookDelivery, delivery_id).last_error  # type: ignore[union-attr]
    assert error is not None and error.startswith(
        "cannot sign: CIT_WEBHOOK_SECRET_KEYS must be Fernet keys"
    )

    # With the right key back, a redelivery goes out signed.
    assert client.post(redeliver, headers=admin).status_code == 200
    dispatcher().drain()
    assert len(receiver.delivered()) == 1 and receiver.bad_signatures == []


def test_reencryption_is_all_or_nothing(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    first = _subscribe(client, admin, receiver)
    elsewhere = settings.model_copy(update={"webhook_secret_keys": OTHER_KEY})
    with db() as session:
        second = service.create_subscription(
            session,
            elsewhere,
            WebhookCreate.model_validate({"url": receiver.url(), "events": ["story.final"]}),
            None,
            allow_private=True,
        )
    stored = _stored(db)
    rotation = settings.model_copy(update={"webhook_secret_keys": f"{NEW_KEY},{OLD_KEY}"})
    with db() as session, pytest.raises(Invalid) as refused:
        service.rotate_keys(session, rotation)
    assert f"subscription(s) {second.id};" in refused.value.detail
    assert "nothing was re-encrypted" in refused.value.detail
    assert first["secret"] not in refused.value.detail and second.secret not in refused.value.detail
    assert _stored(db) == stored


def test_the_rotate_keys_and_new_key_commands(
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    db: Callable[[], Any],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = _subscribe(client, admin, receiver)
    before = _stored(db)[created["id"]]
    monkeypatch.setenv("CIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CIT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CIT_SECRET_KEY", settings.secret_key)
    get_settings.cache_clear()
    try:
        new_key = CliRunner().invoke(cli, ["webhooks", "new-key"])
        key = new_key.stdout.strip()
        assert new_key.exit_code == 0 and encryption.parse_keys(key, encryption.WEBHOOK_SECRETS)

        monkeypatch.setenv("CIT_WEBHOOK_SECRET_KEYS", key)  # the old key left out
        get_settings.cache_clear()
        refused = CliRunner().invoke(cli, ["webhooks", "rotate-keys"])
        assert refused.exit_code == 1 and f"subscription(s) {created['id']};" in refused.stderr
        assert _stored(db)[created["id"]] == before

        monkeypatch.setenv("CIT_WEBHOOK_SECRET_KEYS", f"{key},{OLD_KEY}")
        get_settings.cache_clear()
        done = CliRunner().invoke(cli, ["webhooks", "rotate-keys"])
        assert done.exit_code == 0, done.output
        assert done.stdout == "1 webhook secret(s) re-encrypted with the first key\n"
        after = _stored(db)[created["id"]]
        assert after != before
        only_new = settings.model_copy(update={"webhook_secret_keys": key})
        assert encryption.decrypt(only_new, encryption.WEBHOOK_SECRETS, after) == created["secret"]

        monkeypatch.setenv("CIT_WEBHOOK_SECRET_KEYS", "not-a-key")
        get_settings.cache_clear()
        malformed = CliRunner().invoke(cli, ["webhooks", "rotate-keys"])
        assert malformed.exit_code == 1
        assert "CIT_WEBHOOK_SECRET_KEYS must be Fernet keys" in malformed.stderr
        assert "cit webhooks new-key" in malformed.stderr and "not-a-key" not in malformed.output
    finally:
        get_settings.cache_clear()


def test_malformed_keys_are_refused_when_the_settings_load() -> None:
    for purpose in (encryption.WEBHOOK_SECRETS, encryption.CONTACTS):
        with pytest.raises(ValidationError) as refused:
            Settings(**{purpose.setting: f"{NEW_KEY},short"})
        message = refused.value.errors()[0]["msg"]
        assert message.startswith(f"Value error, {purpose.env} must be Fernet keys")
        assert purpose.new_key_command in message and "short" not in message
        assert NEW_KEY not in repr(Settings(**{purpose.setting: NEW_KEY}))


def test_a_given_secret_may_not_look_encrypted(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/webhooks",
        json={
            "url": "http://127.0.0.1:8811/x",
            "events": ["story.final"],
            "secret": MARKER + "0123456789abcdef",
        },
        headers=admin,
    )
    assert response.status_code == 422 and "must not start with" in response.text


# The migration (1401) on a database with clear secrets --------------------------------------


def _table(secret_column: str) -> Any:
    return sa_table(
        "webhook_subscriptions",
        column("id"),
        column("url"),
        column("description"),
        column("events", JSONType),
        column(secret_column),
        column("include_text"),
        column("active"),
        column("consecutive_failures"),
        column("created_at", UTCDateTime(timezone=True)),
        column("updated_at", UTCDateTime(timezone=True)),
    )


def _add_subscription(engine: Engine, secret: str) -> int:
    """A row as the service before 1401 wrote it (the secret in clear), with a delivery."""
    now = utcnow()
    with engine.begin() as conn:
        subscription_id = conn.execute(
            insert(_table("secret"))
            .values(
                url="https://crm.example.org/hook",
                description="",
                events=["story.final"],
                secret=secret,
                include_text=False,
                active=True,
                consecutive_failures=0,
                created_at=now,
                updated_at=now,
            )
            .returning(column("id"))
        ).scalar_one()
        event_id = conn.execute(
            insert(
                sa_table(
                    "webhook_events",
                    column("id"),
                    column("event_type"),
                    column("payload", JSONType),
                    column("created_at", UTCDateTime(timezone=True)),
                )
            )
            .values(event_type="story.final", payload={}, created_at=now)
            .returning(column("id"))
        ).scalar_one()
        deliveries = sa_table(
            "webhook_deliveries",
            column("subscription_id"),
            column("event_id"),
            column("status"),
            column("attempts"),
            column("created_at", UTCDateTime(timezone=True)),
            column("updated_at", UTCDateTime(timezone=True)),
        )
        conn.execute(
            insert(deliveries).values(
                subscription_id=subscription_id,
                event_id=event_id,
                status="pending",
                attempts=0,
                created_at=now,
                updated_at=now,
            )
        )
    return int(subscription_id)


def _column(engine: Engine, name: str) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, {name} FROM webhook_subscriptions ORDER BY id"))
        return {int(i): str(v) for i, v in rows}


def _deliveries(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.scalars(text("SELECT subscription_id FROM webhook_deliveries")))


def _columns(engine: Engine) -> dict[str, str]:
    return {c["name"]: str(c["type"]) for c in inspect(engine).get_columns("webhook_subscriptions")}


def test_the_migration_encrypts_clear_secrets_and_the_downgrade_decrypts_them(
    scratch_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    keys = Settings(
        env="test", database_url=scratch_url, secret_key=TEST_SECRET, webhook_secret_keys=OLD_KEY
    )
    migrate.upgrade(scratch_url, "1205")
    engine = create_db_engine(scratch_url)
    try:
        clear = {
            _add_subscription(engine, "whsec_generated-before-the-migration"): (
                "whsec_generated-before-the-migration"
            ),
            _add_subscription(engine, "a secret given by the admin"): "a secret given by the admin",
        }
        # A value that already carries the marker (one encrypted before, a restored row): it is
        # never encrypted again.
        marked = encryption.encrypt(keys, encryption.WEBHOOK_SECRETS, "whsec_already-encrypted")
        already = _add_subscription(engine, marked)
        subscriptions = [*clear, already]

        migrate.upgrade(scratch_url, settings=keys)
        assert migrate.current_revision(scratch_url) == migrate.head_revision(scratch_url)
        assert "secret" not in _columns(engine) and "secret_ciphertext" in _columns(engine)
        stored = _column(engine, "secret_ciphertext")
        assert list(stored) == subscriptions
        for subscription_id, secret in clear.items():
            value = stored[subscription_id]
            assert value.startswith(MARKER) and secret not in value
            assert encryption.decrypt(keys, encryption.WEBHOOK_SECRETS, value) == secret
        assert stored[already] == marked
        assert sorted(_deliveries(engine)) == sorted(subscriptions)  # no cascade on the way
        with make_sessionmaker(engine)() as session:
            rows = session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id))
            signing = [service.signing_secret(keys, row) for row in rows]
        assert signing == [*clear.values(), "whsec_already-encrypted"]

        migrate.downgrade(scratch_url, "1205", settings=keys)
        assert "secret_ciphertext" not in _columns(engine)
        assert _columns(engine)["secret"] == "VARCHAR(200)"
        assert _column(engine, "secret") == {**clear, already: "whsec_already-encrypted"}
        assert sorted(_deliveries(engine)) == sorted(subscriptions)

        # Up again with a marked value that no key opens: it stops, and nothing is written.
        foreign = Settings(
            env="test", secret_key="another-secret-key-0123", webhook_secret_keys=OTHER_KEY
        )
        unopened = encryption.encrypt(foreign, encryption.WEBHOOK_SECRETS, "whsec_foreign")
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE webhook_subscriptions SET secret = :v WHERE id = :i"),
                {"v": unopened, "i": already},
            )
        before = _column(engine, "secret")
        with pytest.raises(RuntimeError, match=rf"subscription\(s\) {already}; run it with"):
            migrate.upgrade(scratch_url, settings=keys)
        assert migrate.current_revision(scratch_url) == "1205"
        assert _column(engine, "secret") == before

        # The downgrade with keys that do not open the secrets stops too, writing nothing.
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE webhook_subscriptions SET secret = 'whsec_clear-again' WHERE id = :i"),
                {"i": already},
            )
        migrate.upgrade(scratch_url, settings=keys)
        migrate.downgrade(scratch_url, "1401", settings=keys)  # the later migrations off first
        encrypted = _column(engine, "secret_ciphertext")
        with pytest.raises(RuntimeError, match="the downgrade stopped, nothing written"):
            migrate.downgrade(scratch_url, "1205", settings=foreign)
        assert migrate.current_revision(scratch_url) == "1401"
        assert _column(engine, "secret_ciphertext") == encrypted
    finally:
        engine.dispose()
