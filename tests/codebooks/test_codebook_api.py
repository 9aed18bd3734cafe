"""Codebook API: import, roles, validation naming every place, versions, retiring used codes,
export."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import AuditEvent, CodebookVersion, Job, Suggestion
from nlp.codebook import codebook_to_dict, load_codebook_file, parse_codebook

from .conftest import API, DEFAULT_FILE, PROBLEM, small_codebook


def _version_count(db: Callable[[], Any]) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(CodebookVersion)) or 0


def _audit(db: Callable[[], Any], action: str) -> list[AuditEvent]:
    with db() as session:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        session.expunge_all()
    return rows


def test_create_from_the_default_file_round_trips(
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    default_content: dict[str, Any],
    db: Callable[[], Any],
) -> None:
    admin = token_for("admin", name="Ada Admin")
    response = client.post(
        API, json={"content": default_content, "change_note": "shipped default"}, headers=admin
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["key"] == "cit-service-encounters" and created["current_version"] == 1
    assert created["n_codes"] == 4
    version = created["version"]
    assert version["number"] == 1 and version["created_by"] == "Ada Admin"
    assert version["change_note"] == "shipped default" and version["code_mapping"] is None
    # Stored normalised, exactly as the nlp library writes it, and it parses back the same.
    expected = codebook_to_dict(load_codebook_file(DEFAULT_FILE))
    assert version["content"] == expected
    assert parse_codebook(version["content"]) == load_codebook_file(DEFAULT_FILE)

    read = client.get(f"{API}/{created['id']}", headers=admin).json()
    assert read["version"]["content"] == expected
    listed = client.get(API, headers=admin).json()
    assert [(c["key"], c["current_version"], c["n_codes"]) for c in listed] == [
        ("cit-service-encounters", 1, 4)
    ]
    [event] = _audit(db, "codebook.create")
    assert event.actor_name == "Ada Admin" and event.entity_id == str(created["id"])
    assert event.after is not None
    assert event.after["codes"] == ["complaint", "special_request", "extra_mile", "owner_error"]

    again = client.post(API, json={"content": default_content}, headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert _version_count(db) == 1


def test_roles(
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    create_codebook: Callable[..., dict[str, Any]],
) -> None:
    codebook = create_codebook()
    url = f"{API}/{codebook['id']}"
    researcher, viewer = token_for("researcher"), token_for("viewer")
    for path in (API, url, f"{url}/versions", f"{url}/versions/1", f"{url}/export"):
        assert client.get(path, headers=researcher).status_code == 200, path
        denied = client.get(path, headers=viewer)
        assert denied.status_code == 403 and denied.headers["content-type"] == PROBLEM
        assert client.get(path).status_code == 401
    body = {"content": small_codebook()}
    assert client.post(API, json=body, headers=researcher).status_code == 403
    assert client.put(url, json=body, headers=researcher).status_code == 403
    change = {"operations": [{"op": "rename", "from": "a", "to": "x"}]}
    assert client.post(f"{url}/changes", json=change, headers=researcher).status_code == 403
    assert client.get(url, headers=researcher).json()["current_version"] == 1


def test_invalid_codebook_names_every_place(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
) -> None:
    content = {
        "key": "broken",
        "name": "Broken",
        "codes": [
            {"key": "a", "label": "A"},
            {"key": "a", "label": "A again"},
            {"key": "b", "label": "B", "indicators": {"patterns": [[{"NOT_AN_ATTR": "x"}]]}},
            {"key": "c", "label": "C", "parent": "e"},
            {"key": "e", "label": "E", "parent": "c"},
            {"key": "f", "label": "F", "parent": "nowhere"},
        ],
    }
    response = client.post(API, json={"content": content}, headers=admin)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["title"] == "Invalid codebook" and problem["status"] == 422
    by_path = {e["path"]: e["message"] for e in problem["errors"]}
    assert "duplicate key 'a'" in by_path["codes[1].key"]
    assert "Matcher pattern" in by_path["codes[2].indicators.patterns[0]"]
    assert "parent cycle" in by_path["codes[3].parent"]
    assert "unknown parent 'nowhere'" in by_path["codes[5].parent"]
    assert len(problem["errors"]) == 4
    assert "codes[1].key" in problem["detail"]
    assert client.get(API, headers=admin).json() == []
    assert _version_count(db) == 0

    # The same content as a new version of an existing codebook: refused, nothing stored.
    codebook = create_codebook(small_codebook("broken"))
    again = client.put(f"{API}/{codebook['id']}", json={"content": content}, headers=admin)
    assert again.status_code == 422
    assert {e["path"] for e in again.json()["errors"]} == set(by_path)
    assert _version_count(db) == 1

    # Payload validation stays a plain 422 problem, without codebook errors.
    extra = client.post(API, json={"content": content, "colour": "red"}, headers=admin)
    assert extra.status_code == 422 and extra.json()["title"] == "Validation failed"


def test_update_creates_versions_with_who_and_note(
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
) -> None:
    codebook = create_codebook()
    url = f"{API}/{codebook['id']}"
    editor = token_for("admin", name="Erin Editor")
    content = small_codebook()
    content["codes"][0]["label"] = "Code a, clearer"
    content["name"] = "Renamed codebook"
    updated = client.put(
        url, json={"content": content, "change_note": "clearer label"}, headers=editor
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["current_version"] == 2 and body["name"] == "Renamed codebook"
    assert body["version"]["number"] == 2 and body["version"]["created_by"] == "Erin Editor"
    assert body["version"]["change_note"] == "clearer label"

    # Identical content (even with another note) makes no new version.
    same = client.put(url, json={"content": content, "change_note": "again"}, headers=editor)
    assert same.status_code == 200 and same.json()["version"]["number"] == 2
    versions = client.get(f"{url}/versions", headers=editor).json()
    assert [v["number"] for v in versions] == [1, 2]
    first = client.get(f"{url}/versions/1", headers=editor).json()
    assert first["content"]["codes"][0]["label"] == "Code a"  # versions never change
    assert client.get(f"{url}/versions/3", headers=editor).status_code == 404
    assert _version_count(db) == 2

    [event] = _audit(db, "codebook.update")
    assert event.actor_name == "Erin Editor"
    assert event.before == {"version": 1}
    assert event.after is not None and event.after["version"] == 2
    assert event.after["changed"] == ["a"] and event.after["added"] == []

    renamed_key = {**content, "key": "other-key"}
    refused = client.put(url, json={"content": renamed_key}, headers=editor)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "key"
    assert client.put(f"{API}/999999", json={"content": content}, headers=editor).status_code == 404


def test_a_used_code_is_retired_never_removed(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
    make_story: Callable[..., int],
    add_suggestions: Callable[[int, int, dict[str, bool]], None],
) -> None:
    codebook = create_codebook(small_codebook(codes=("a", "b", "c", "d")))
    url = f"{API}/{codebook['id']}"
    make_story(codebook["id"], ["a"])
    make_story(codebook["id"], ["a", "b"])
    content = small_codebook(codes=("a", "b", "c", "d"))

    without_a = {**content, "codes": [c for c in content["codes"] if c["key"] != "a"]}
    refused = client.put(url, json={"content": without_a}, headers=admin)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert "'a'" in error["message"] and "2 stories" in error["message"]
    assert "retired: true" in error["message"]
    assert _version_count(db) == 1

    # Retiring it is the way; the retired code stays in the content.
    content["codes"][0]["retired"] = True
    retired = client.put(url, json={"content": content}, headers=admin).json()
    assert retired["current_version"] == 2 and retired["n_codes"] == 3
    first_code = retired["version"]["content"]["codes"][0]
    assert first_code["key"] == "a" and first_code["retired"] is True

    # A code suggested to coders counts as used; a mere low score does not, and an unused
    # code may be removed: the suggestions scoring it are dropped and their story re-queued.
    scored, other = make_story(codebook["id"], []), make_story(codebook["id"], [])
    add_suggestions(scored, codebook["id"], {"c": True, "d": False})
    add_suggestions(other, codebook["id"], {"b": True})
    without_c = {**content, "codes": [c for c in content["codes"] if c["key"] != "c"]}
    refused_c = client.put(url, json={"content": without_c}, headers=admin)
    assert refused_c.status_code == 422 and "'c' is used by 1 story" in refused_c.json()["detail"]
    without_d = {**content, "codes": [c for c in content["codes"] if c["key"] != "d"]}
    removed = client.put(url, json={"content": without_d, "change_note": "d unused"}, headers=admin)
    assert removed.status_code == 200, removed.text
    assert [c["key"] for c in removed.json()["version"]["content"]["codes"]] == ["a", "b", "c"]
    with db() as session:
        assert session.scalars(select(Suggestion.incident_id)).all() == [other]
        # Every story not yet coded is re-scored under the new version (coded ones are not).
        queued = session.scalars(select(Job.subject).where(Job.kind == "suggest")).all()
        assert sorted(queued) == sorted([f"incident:{scored}", f"incident:{other}"])
    event = _audit(db, "codebook.update")[-1]
    assert event.after is not None and event.after["removed"] == ["d"]


def test_export_yaml_parses_back_to_the_same_codebook(
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    default_content: dict[str, Any],
    create_codebook: Callable[..., dict[str, Any]],
) -> None:
    codebook = create_codebook(default_content)
    url = f"{API}/{codebook['id']}"
    researcher = token_for("researcher")
    response = client.get(f"{url}/export", headers=researcher)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert "cit-service-encounters-v1.yaml" in response.headers["content-disposition"]
    exported = parse_codebook(yaml.safe_load(response.text))
    assert exported == load_codebook_file(DEFAULT_FILE)

    changed = dict(default_content, name="Second edition")
    admin = token_for("admin")
    assert client.put(url, json={"content": changed}, headers=admin).status_code == 200
    current = yaml.safe_load(client.get(f"{url}/export", headers=researcher).text)
    old = yaml.safe_load(client.get(f"{url}/export?version=1", headers=researcher).text)
    assert current["name"] == "Second edition" and old["name"] == default_content["name"]
    missing = client.get(f"{url}/export?version=7", headers=researcher)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM


def test_openapi_lists_the_codebook_problems(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    put = paths["/api/v1/codebooks/{codebook_id}"]["put"]["responses"]
    assert {"403", "404", "409", "422"} <= set(put)
    assert "application/problem+json" in put["422"]["content"]
    export = paths["/api/v1/codebooks/{codebook_id}/export"]["get"]["responses"]
    assert "application/yaml" in export["200"]["content"]
