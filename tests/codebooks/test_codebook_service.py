"""Service functions other domains and the CLI call directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from app.codebooks import service
from app.codebooks.service import CodebookInvalid
from app.errors import Conflict
from app.models import Codebook
from nlp.codebook import load_codebook_file

from .conftest import DEFAULT_FILE, small_codebook


def test_default_codebook_and_ensure_default(db: Callable[[], Any]) -> None:
    with db() as session:
        assert service.default_codebook(session) is None
        service.create_codebook(session, small_codebook("older"), None)
        service.create_codebook(session, small_codebook("newer"), None)
        found = service.default_codebook(session)
        assert found is not None and found.key == "older"  # no default loaded: the oldest

    with db() as session:
        loaded = service.ensure_default_codebook(session, DEFAULT_FILE)
        assert loaded.number == 1 and loaded.created_by == "cli"
        assert loaded.change_note == "loaded from cit-service-encounters.yaml"
        assert service.load_nlp_codebook(loaded) == load_codebook_file(DEFAULT_FILE)
        default = service.default_codebook(session)
        assert default is not None and default.key == "cit-service-encounters"

    with db() as session:
        again = service.ensure_default_codebook(session, DEFAULT_FILE)
        assert again.id == loaded.id
        assert len(service.list_codebooks(session)) == 3
        exported = service.export_yaml(again)
        assert exported.startswith("# cit-service-encounters version 1, ")


def test_codes_used_under_another_codebook_do_not_count(
    db: Callable[[], Any], make_story: Callable[..., int]
) -> None:
    with db() as session:
        one = service.create_codebook(session, small_codebook("one"), None).codebook_id
        two = service.create_codebook(session, small_codebook("two"), None).codebook_id
    make_story(one, ["a"])
    with db() as session:
        first = session.get(Codebook, one)
        second = session.get(Codebook, two)
        assert first is not None and second is not None
        assert service.used_codes(session, first, ["a", "b"]) == {"a": 1}
        assert service.used_codes(session, second, ["a", "b"]) == {}
        version = service.update_codebook(
            session, second, small_codebook("two", codes=("b", "c")), None, "a was never used"
        )
        assert version.number == 2
        with pytest.raises(CodebookInvalid) as refused:
            service.update_codebook(session, first, small_codebook("one", codes=("b",)), None)
        assert [e["path"] for e in refused.value.errors] == ["codes"]


def test_apply_changes_accepts_plain_operations(
    db: Callable[[], Any], make_story: Callable[..., int]
) -> None:
    with db() as session:
        cid = service.create_codebook(session, small_codebook(), None).codebook_id
    make_story(cid, ["b"])
    with db() as session:
        codebook = session.get(Codebook, cid)
        assert codebook is not None
        version = service.apply_changes(
            session, codebook, [{"op": "merge", "from": ["b"], "into": "c"}], None, "plain"
        )
        assert version.number == 2 and version.code_mapping == {"b": ["c"]}
        assert version.created_by == "cli"
        with pytest.raises(CodebookInvalid) as bad:
            service.apply_changes(session, codebook, [{"op": "rename", "from": "c"}], None)
        assert bad.value.errors[0]["path"].startswith("operations[0]")


def test_a_stale_writer_gets_a_conflict(app: FastAPI, db: Callable[[], Any]) -> None:
    with db() as session:
        cid = service.create_codebook(session, small_codebook(), None).codebook_id
    with db() as session:
        stale = service.get_codebook(session, cid)
        session.expunge(stale)
    with db() as session:
        fresh = service.get_codebook(session, cid)
        service.update_codebook(session, fresh, small_codebook(codes=("a", "b", "c", "d")), None)
    with pytest.raises(Conflict), db() as session:
        # The object still says version 1: the conditional bump finds no such row.
        stale = session.merge(stale, load=False)
        service.update_codebook(session, stale, small_codebook(codes=("a", "b", "e")), None)
    with db() as session:
        assert [
            v.number for v in service.list_versions(session, service.get_codebook(session, cid))
        ] == [1, 2]
