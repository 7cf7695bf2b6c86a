"""The run store's parts on their own: sample blobs, format check, a reader beside a writer."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from rig.record.reader import StoreReader
from rig.record.schema import STORE_FILE, decode_sample, encode_sample
from rig.record.store import RunStore
from twin.errors import RunStoreError

POINTS = [{"id": f"cdu{i}.supply_temp", "unit": "degC"} for i in range(1, 41)]


def test_sample_blobs_are_bit_exact_and_a_noiseless_truth_costs_next_to_nothing() -> None:
    rng = np.random.default_rng(3)
    measured = rng.normal(40.0, 5.0, 2000)
    measured[[3, 7, 11]] = [np.nan, np.inf, -0.0]
    truth = measured.copy()
    truth[:10] += 0.01  # a few noisy sensors
    m_blob, t_blob = encode_sample(measured, truth)
    m, t = decode_sample(m_blob, t_blob)
    assert m.view("<u8").tolist() == measured.view("<u8").tolist()  # NaN and -0.0 too
    assert t.view("<u8").tolist() == truth.view("<u8").tolist()
    assert len(t_blob) < len(m_blob) / 20  # identical values XOR to zero


def test_a_reader_beside_a_live_writer_sees_committed_rows_only(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, {"site": "unit"}, POINTS, commit_interval_s=60.0)
    try:
        with StoreReader.open(tmp_path) as reader:
            assert reader.point_ids == [p["id"] for p in POINTS]
            store.write_sample(1.0, np.arange(40.0), np.arange(40.0))
            store.write_event(1.0, "cdu1", "alarm", "leak")
            assert (reader.count_samples(), reader.events()) == (0, [])  # still buffered
            store.flush()
            assert reader.count_samples() == 1 and reader.events()[0].message == "leak"
            t, measured, _ = reader.series("cdu3.supply_temp")
            assert t.tolist() == [1.0] and measured.tolist() == [2.0]
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.query("DELETE FROM samples")
        assert store.summary()["samples"] == 1  # the writer's own reads commit first
    finally:
        store.close()


def test_commit_thread_commits_without_a_flush(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, {}, POINTS, commit_interval_s=0.05)
    try:
        store.write_sample(0.0, np.zeros(40), np.zeros(40))
        with StoreReader.open(tmp_path) as reader:
            deadline = time.monotonic() + 5.0
            while reader.count_samples() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert reader.count_samples() == 1
    finally:
        store.close()


def test_unknown_format_and_closed_reader_are_clear_errors(tmp_path: Path) -> None:
    RunStore.create(tmp_path, {}, POINTS).close()
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:
        conn.execute("UPDATE manifest SET value = '99' WHERE key = 'format'")
    conn.close()
    with pytest.raises(RunStoreError, match="unknown run store format"):
        StoreReader.open(tmp_path)
    with pytest.raises(RunStoreError, match="not a run directory"):
        StoreReader.open(tmp_path / "nothing")
    with sqlite3.connect(tmp_path / STORE_FILE) as conn:
        conn.execute("UPDATE manifest SET value = '1' WHERE key = 'format'")
    conn.close()
    reader = StoreReader.open(tmp_path)
    reader.close()
    with pytest.raises(RunStoreError, match="closed"):
        reader.count_samples()
