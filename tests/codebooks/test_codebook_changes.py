"""Rename, merge and split: stories' final codes are mapped forward, never silently lost."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import AuditEvent, CodebookVersion, IncidentCode, Job, Suggestion

from .conftest import API, PROBLEM, small_codebook

FinalCodes = Callable[[], dict[int, dict[str, int]]]


def _change(
    client: TestClient, headers: dict[str, str], codebook_id: int, *ops: dict[str, Any]
) -> Any:
    return client.post(
        f"{API}/{codebook_id}/changes",
        json={"operations": list(ops), "change_note": "recode"},
        headers=headers,
    )


def _version_id(db: Callable[[], Any], codebook_id: int, number: int) -> int:
    with db() as session:
        found = session.scalar(
            select(CodebookVersion.id).where(
                CodebookVersion.codebook_id == codebook_id, CodebookVersion.number == number
            )
        )
    assert found is not None
    return int(found)


def _codes(version: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["key"]: c for c in version["content"]["codes"]}


def test_rename_moves_codings_to_the_new_key(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
    make_story: Callable[..., int],
    final_codes: FinalCodes,
    add_suggestions: Callable[[int, int, dict[str, bool]], None],
) -> None:
    codebook = create_codebook()
    cid = codebook["id"]
    v1 = _version_id(db, cid, 1)
    one, two, other = make_story(cid, ["a"]), make_story(cid, ["a", "b"]), make_story(cid, ["c"])
    add_suggestions(one, cid, {"a": True, "b": False, "c": False})
    add_suggestions(other, cid, {"b": False, "c": True})
    response = _change(client, admin, cid, {"op": "rename", "from": "a", "to": "x", "label": "X"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["current_version"] == 2 and body["n_codes"] == 3
    version = body["version"]
    assert version["code_mapping"] == {"a": ["x"]} and version["change_note"] == "recode"
    codes = _codes(version)
    assert codes["a"]["retired"] is True
    assert codes["x"]["retired"] is False and codes["x"]["label"] == "X"
    assert codes["x"]["definition"] == "Definition of a"
    assert [c["key"] for c in version["content"]["codes"]] == ["a", "x", "b", "c"]

    v2 = _version_id(db, cid, 2)
    assert final_codes() == {one: {"x": v2}, two: {"x": v2, "b": v1}, other: {"c": v1}}
    with db() as session:
        moved = session.scalar(select(IncidentCode).where(IncidentCode.incident_id == one))
        assert moved is not None and moved.confirmed_by == "coder-1" and moved.source == "review"
        # Suggestions scoring the old code are dropped, their story queued to be scored again.
        assert session.scalars(select(Suggestion.incident_id)).all() == [other]
        assert session.scalars(select(Job.subject)).all() == [f"incident:{one}"]

    # The retired key cannot be renamed again, and the new key is taken.
    again = _change(client, admin, cid, {"op": "rename", "from": "a", "to": "y"})
    assert again.status_code == 422
    assert again.json()["errors"] == [
        {"path": "operations[0].from", "message": "code 'a' is retired"}
    ]
    taken = _change(client, admin, cid, {"op": "rename", "from": "b", "to": "c"})
    assert taken.status_code == 422 and taken.json()["errors"][0]["path"] == "operations[0].to"


def test_merge_gives_each_story_the_target_once(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
    make_story: Callable[..., int],
    final_codes: FinalCodes,
) -> None:
    codebook = create_codebook(small_codebook(codes=("a", "b", "c", "d")))
    cid = codebook["id"]
    v1 = _version_id(db, cid, 1)
    s1 = make_story(cid, ["a"])
    s2 = make_story(cid, ["a", "c"])
    s3 = make_story(cid, ["b", "c"])
    s4 = make_story(cid, ["c", "d"])
    s5 = make_story(cid, ["d"])

    response = _change(client, admin, cid, {"op": "merge", "from": ["a", "c"], "into": "b"})
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    assert version["code_mapping"] == {"a": ["b"], "c": ["b"]}
    codes = _codes(version)
    assert (codes["a"]["retired"], codes["b"]["retired"], codes["c"]["retired"]) == (
        True,
        False,
        True,
    )
    v2 = _version_id(db, cid, 2)
    assert final_codes() == {
        s1: {"b": v2},
        s2: {"b": v2},
        s3: {"b": v1},  # already carried b: that row stays, the c row goes
        s4: {"b": v2, "d": v1},
        s5: {"d": v1},
    }

    # Into a code that does not exist yet: created from the first source, with a new label.
    created = _change(
        client, admin, cid, {"op": "merge", "from": ["d"], "into": "e", "label": "Everything"}
    )
    assert created.status_code == 200, created.text
    codes = _codes(created.json()["version"])
    assert codes["e"]["label"] == "Everything" and codes["e"]["definition"] == "Definition of d"
    assert codes["d"]["retired"] is True
    v3 = _version_id(db, cid, 3)
    assert final_codes()[s5] == {"e": v3}

    into_retired = _change(client, admin, cid, {"op": "merge", "from": ["b"], "into": "a"})
    assert into_retired.status_code == 422
    assert into_retired.json()["errors"][0]["path"] == "operations[0].into"
    unknown = _change(client, admin, cid, {"op": "merge", "from": ["b", "zz"], "into": "e"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"path": "operations[0].from[1]", "message": "unknown code 'zz'"}
    ]


def test_split_assigns_every_story(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
    make_story: Callable[..., int],
    final_codes: FinalCodes,
) -> None:
    codebook = create_codebook()
    cid = codebook["id"]
    url = f"{API}/{cid}"
    s1, s2, s3 = make_story(cid, ["a"]), make_story(cid, ["a", "b"]), make_story(cid, ["c"])
    # The admin adds the new codes first, with an ordinary update.
    added = client.put(
        url, json={"content": small_codebook(codes=("a", "b", "c", "x", "y"))}, headers=admin
    )
    assert added.status_code == 200 and added.json()["current_version"] == 2
    before = final_codes()

    # Missing assignments (s2) and assignments to stories without a (s3) are both named.
    split = {"op": "split", "from": "a", "into": ["x", "y"], "assign": {str(s1): ["x"]}}
    incomplete = _change(client, admin, cid, {**split, "assign": {str(s1): ["x"], str(s3): ["y"]}})
    assert incomplete.status_code == 422
    assert incomplete.headers["content-type"] == PROBLEM
    messages = [e["message"] for e in incomplete.json()["errors"]]
    assert any("missing for" in m and str(s2) in m for m in messages), messages
    assert any("do not carry 'a'" in m and str(s3) in m for m in messages), messages
    empty = _change(client, admin, cid, {**split, "assign": {str(s1): ["x"], str(s2): []}})
    assert empty.status_code == 422 and str(s2) in empty.json()["detail"]
    wrong = _change(client, admin, cid, {**split, "assign": {str(s1): ["x"], str(s2): ["b"]}})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["path"] == f"operations[0].assign.{s2}"
    # Nothing changed by the refused calls.
    assert final_codes() == before
    assert client.get(url, headers=admin).json()["current_version"] == 2

    done = _change(client, admin, cid, {**split, "assign": {str(s1): ["x"], str(s2): ["x", "y"]}})
    assert done.status_code == 200, done.text
    version = done.json()["version"]
    assert version["number"] == 3 and version["code_mapping"] == {"a": ["x", "y"]}
    assert _codes(version)["a"]["retired"] is True
    v1, v3 = _version_id(db, cid, 1), _version_id(db, cid, 3)
    assert final_codes() == {s1: {"x": v3}, s2: {"x": v3, "y": v3, "b": v1}, s3: {"c": v1}}
    with db() as session:
        copies = session.scalars(
            select(IncidentCode).where(IncidentCode.incident_id == s2, IncidentCode.code != "b")
        ).all()
        assert {(c.source, c.confirmed_by) for c in copies} == {("review", "coder-1")}

    # A split into a code that is not active is refused.
    inactive = _change(
        client, admin, cid, {"op": "split", "from": "b", "into": ["a", "x"], "assign": {}}
    )
    assert inactive.status_code == 422
    assert "operations[0].into[0]" in {e["path"] for e in inactive.json()["errors"]}


def test_operations_of_one_call_apply_together(
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
    create_codebook: Callable[..., dict[str, Any]],
    make_story: Callable[..., int],
    final_codes: FinalCodes,
) -> None:
    codebook = create_codebook()
    cid = codebook["id"]
    s1, s2 = make_story(cid, ["a"]), make_story(cid, ["b", "c"])
    ops = (
        {"op": "rename", "from": "a", "to": "x"},
        {"op": "merge", "from": ["x", "b"], "into": "c"},
    )
    response = _change(client, admin, cid, *ops)
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    assert version["number"] == 2
    assert version["code_mapping"] == {"a": ["c"], "b": ["c"]}
    v1, v2 = _version_id(db, cid, 1), _version_id(db, cid, 2)
    assert final_codes() == {s1: {"c": v2}, s2: {"c": v1}}

    with db() as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "codebook.change")
        ).all()
        assert event.before == {"version": 1}
        assert event.after is not None
        assert [op["op"] for op in event.after["operations"]] == ["rename", "merge"]
        assert event.after["operations"][0]["from"] == "a"
        assert event.after["code_mapping"] == {"a": ["c"], "b": ["c"]}
        assert event.after["codings_mapped"] == 1 and event.after["codings_removed"] == 1

    # One bad operation refuses the whole call: the first one is not applied either.
    c1 = make_story(cid, ["c"])
    refused = _change(
        client,
        admin,
        cid,
        {"op": "rename", "from": "c", "to": "z"},
        {"op": "merge", "from": ["nope"], "into": "z"},
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "operations[1].from[0]"
    assert client.get(f"{API}/{cid}", headers=admin).json()["current_version"] == 2
    assert final_codes()[c1] == {"c": v2}


def test_change_payload_is_validated(
    client: TestClient, admin: dict[str, str], create_codebook: Callable[..., dict[str, Any]]
) -> None:
    cid = create_codebook()["id"]
    for ops in (
        [],
        [{"op": "delete", "from": "a"}],
        [{"op": "rename", "from": "a", "to": "a"}],
        [{"op": "rename", "from": "a", "to": "Not A Key"}],
        [{"op": "merge", "from": ["a"], "into": "a"}],
        [{"op": "split", "from": "a", "into": ["b"], "assign": {}}],
        [{"op": "rename", "from": "a", "to": "x", "extra": 1}],
    ):
        response = client.post(f"{API}/{cid}/changes", json={"operations": ops}, headers=admin)
        assert response.status_code == 422, ops
        assert response.json()["title"] == "Validation failed"
    assert (
        client.post(
            f"{API}/999999/changes",
            json={"operations": [{"op": "rename", "from": "a", "to": "x"}]},
            headers=admin,
        ).status_code
        == 404
    )
