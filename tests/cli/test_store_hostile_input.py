"""Hostile run stores: empty, damaged, foreign or missing files are a one-line StoreError, exit 2."""

import random
import sqlite3

import pytest

from thinktwice.cli import main
from thinktwice.errors import StoreError
from thinktwice.eval.store import RunStore
from thinktwice.testing.cli import run_cli

PAGE = 4096


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    """A store with one finished eval run of five problems, checkpointed into the main file."""
    db = tmp_path_factory.mktemp("store") / "good.db"
    try:
        main(["eval", "--task", "gsm8k", "--limit", "5", "--strategy", "self-consistency", "-n", "2",
              "--backend", "scripted", "-B", 'replies=["#### 18"]', "-B", "cycle=true", "--store", str(db), "--json"])
    except SystemExit as e:
        assert not e.code
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db.read_bytes()


READERS = [["runs"], ["show", "1"], ["show", "1", "--json"], ["eval", "--resume", "1"], ["sample", "--resume", "1"]]


@pytest.mark.parametrize("args", READERS)
def test_a_zero_byte_store_is_refused_and_left_empty(args, tmp_path, capsys):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    code, _, err = run_cli([*args, "--store", str(db)], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "empty" in err and str(db) in err
    assert db.stat().st_size == 0  # --resume did not turn it into a store


@pytest.mark.parametrize("args", [["eval", "--resume", "1"], ["sample", "--resume", "1"]])
def test_resume_on_a_missing_store_is_refused_without_creating_it(args, tmp_path, capsys):
    db = tmp_path / "missing.db"
    code, _, err = run_cli([*args, "--store", str(db)], capsys)
    assert code == 2 and "no such run store" in err and len(err.strip().splitlines()) == 1
    assert not db.exists()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path, capsys):
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    for args in READERS:
        code, _, err = run_cli([*args, "--store", str(db)], capsys)
        assert code == 2 and str(db) in err and "Traceback" not in err, (args, err)


def _corrupt(data: bytes, seed: int) -> bytes:
    """Random bytes written inside every page but the first (the header stays valid)."""
    rng = random.Random(seed)
    buf = bytearray(data)
    for page in range(1, len(buf) // PAGE):
        for _ in range(rng.choice([4, 40, 400])):
            buf[page * PAGE + rng.randrange(PAGE)] = rng.randrange(256)
    return bytes(buf)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_inside_the_pages_never_give_a_traceback(seed, good_store, tmp_path, capsys):
    db = tmp_path / "bad.db"
    for args in READERS:
        db.write_bytes(_corrupt(good_store, seed))
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"bad.db{suffix}").unlink(missing_ok=True)
        code, _, err = run_cli([*args, "--store", str(db)], capsys)  # an unexpected error would propagate here
        assert "Traceback" not in err
        if code == 2:  # after at most the "run N -> STORE" progress line
            assert err.strip().splitlines()[-1].startswith("error: ") and err.count("error: ") == 1, err


def test_a_damaged_page_is_a_store_error_naming_the_file(good_store, tmp_path):
    db = tmp_path / "bad.db"
    buf = bytearray(good_store)
    for page in range(1, len(buf) // PAGE):  # every b-tree page header becomes garbage
        buf[page * PAGE: page * PAGE + 16] = b"\xff" * 16
    db.write_bytes(bytes(buf))
    with pytest.raises(StoreError, match=f"{db.name}: not a readable SQLite run store"):
        with RunStore(db, readonly=True) as st:
            st.list_runs()
            st.decisions(1)
            st.samples(1)


def test_a_damaged_record_is_a_store_error(good_store, tmp_path):
    db = tmp_path / "rec.db"
    db.write_bytes(good_store)
    con = sqlite3.connect(db)
    con.execute("UPDATE samples SET tokens=x'00ff00ff' WHERE run_id=1")
    con.execute("UPDATE runs SET config='{not json' WHERE id=1")
    con.commit()
    con.close()
    with RunStore(db, readonly=True) as st:
        with pytest.raises(StoreError, match="damaged record"):
            st.samples(1)
        with pytest.raises(StoreError, match="damaged record"):
            st.get_run(1)
