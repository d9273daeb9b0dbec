"""Job records in the local store: atomic whole-file writes, ids checked, newest first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.errors import ArtifactIntegrityError, NotFound
from service.ids import new_job_id
from service.store.local import LocalModelStore


@pytest.fixture
def store(tmp_path: Path) -> LocalModelStore:
    return LocalModelStore(tmp_path / "store", secret_key="k")


def _job(job_id: str, status: str = "queued") -> dict[str, object]:
    return {"id": job_id, "status": status, "progress": {"done": 0}}


def test_put_get_replace_list(store: LocalModelStore) -> None:
    ids = [new_job_id() for _ in range(5)]
    for job_id in ids:
        store.put_job(_job(job_id))
    store.put_job(_job(ids[0], "running"))  # replaced whole
    assert store.get_job(ids[0])["status"] == "running"
    assert store.job_ids() == ids[::-1]
    page, cursor = store.list_jobs(limit=2, cursor=None)
    assert [j["id"] for j in page] == ids[::-1][:2]
    page, cursor = store.list_jobs(limit=10, cursor=cursor)
    assert [j["id"] for j in page] == ids[::-1][2:] and cursor is None
    # Nothing is left behind in tmp/ by the renames.
    assert list((store.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("bad", ["", "..", "../models/x", "0" * 27, "0" * 29, "A" * 28, "x/y"])
def test_ids_are_checked_before_they_become_paths(store: LocalModelStore, bad: str) -> None:
    with pytest.raises(NotFound):
        store.get_job(bad)
    with pytest.raises(NotFound):
        store.put_job(_job(bad))
    assert list(store.jobs_dir.iterdir()) == []


def test_unknown_and_damaged_jobs(store: LocalModelStore) -> None:
    with pytest.raises(NotFound):
        store.get_job(new_job_id())
    good, damaged = new_job_id(), new_job_id()
    store.put_job(_job(good))
    (store.jobs_dir / f"{damaged}.json").write_text("{not json")
    with pytest.raises(ArtifactIntegrityError):
        store.get_job(damaged)
    other = new_job_id()
    (store.jobs_dir / f"{other}.json").write_text(f'{{"id": "{good}"}}')
    with pytest.raises(ArtifactIntegrityError):
        store.get_job(other)
    # Listing skips damaged records (and stray files) instead of failing.
    (store.jobs_dir / "stray.json").write_text("{}")
    assert [j["id"] for j in store.list_jobs(limit=10, cursor=None)[0]] == [good]


def test_a_crash_mid_write_leaves_the_previous_copy(store: LocalModelStore) -> None:
    job_id = new_job_id()
    store.put_job(_job(job_id, "running"))
    # What a writer killed before its rename leaves: a temp file of a dead process.
    (store.tmp_dir / f"{2**22 + 7}-dead-0123.json").write_text('{"id": "half')
    assert store.get_job(job_id)["status"] == "running"
    LocalModelStore(store.root, secret_key="k")  # a restart cleans tmp/
    assert not any(p.name.startswith(f"{2**22 + 7}-") for p in store.tmp_dir.iterdir())
    assert os.listdir(store.jobs_dir) == [f"{job_id}.json"]
