"""Unit tests of the upload journal's record files (no server needed)."""

from __future__ import annotations

import os

from pys3fs.journal import PAGE, Journal, Record


def inode(journal: Journal, name: str) -> int:
    return os.stat(os.path.join(journal.dir, name + ".json")).st_ino


def test_a_record_never_synced_is_rewritten_in_place_and_reads_back(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write(Record(name="a", key="long/" * 20 + "key", attrs={"mode": 33188}), sync=False)
    first = inode(journal, "a")
    shorter = Record(name="a", key="k", closed=True, size=5, attrs={"mode": 33152})
    journal.write(shorter, sync=False)
    assert inode(journal, "a") == first  # no new file
    (loaded,) = journal.load()
    assert loaded == shorter
    assert not os.path.exists(os.path.join(journal.dir, "a.json.tmp"))


def test_a_synced_record_is_only_replaced_through_a_rename(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write(Record(name="a", key="k", upload_id="u1"), sync=True)
    first = inode(journal, "a")
    newer = Record(name="a", key="k", closed=True, upload_id="u1")
    journal.write(newer, sync=False)
    assert inode(journal, "a") != first  # the synced one stays whole until the rename
    assert journal.load() == [newer]


def test_records_left_by_an_earlier_mount_are_replaced_through_a_rename(tmp_path):
    Journal(str(tmp_path)).write(Record(name="a", key="k"), sync=False)
    journal = Journal(str(tmp_path))  # the next mount
    journal.load()
    first = inode(journal, "a")
    journal.write(Record(name="a", key="k", closed=True), sync=False)
    assert inode(journal, "a") != first


def test_a_record_over_a_page_goes_through_a_rename(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write(Record(name="a", key="k"), sync=False)
    first = inode(journal, "a")
    big = Record(name="a", key="k" * PAGE)
    journal.write(big, sync=False)
    assert inode(journal, "a") != first
    assert journal.load() == [big]
    journal.remove("a", sync=False)
    assert journal.load() == []
