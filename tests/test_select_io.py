"""Reading landscape directories (contract of `pplaw score`) and writing selections."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pplaw_jax.errors import PplawError
from pplaw_jax.landscape.directory import read_landscape
from pplaw_jax.select import write_selection
from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape


@pytest.fixture
def table():
    return synthetic_landscape(1000, seed=0)


def test_reads_completed_parts_in_order(tmp_path, table):
    d = write_landscape(tmp_path / "land", table, rows_per_part=300)
    # a part still being written (no .done marker) is ignored
    pq.write_table(synthetic_landscape(50, seed=9), d / "parts" / "host001-part00000.parquet")
    land = read_landscape(d)
    assert land.size == 1000
    assert land.table.column("doc_id").to_pylist() == table.column("doc_id").to_pylist()
    np.testing.assert_array_equal(land.ppl, table.column("ppl").to_numpy())
    np.testing.assert_array_equal(land.n_tokens, table.column("n_tokens").to_numpy())
    assert land.table.column_names == ["doc_id", "chunk", "n_tokens", "ppl"]


def test_incomplete_or_missing_landscape(tmp_path, table):
    with pytest.raises(PplawError, match="not found"):
        read_landscape(tmp_path / "nowhere")
    d = write_landscape(tmp_path / "land", table, rows_per_part=300, complete=False)
    with pytest.raises(PplawError, match="landscape incomplete"):
        read_landscape(d)
    (d / "summary.json").write_text("{}")
    for marker in (d / "parts").glob("*.done"):
        marker.unlink()
    with pytest.raises(PplawError, match="no completed parts"):
        read_landscape(d)


def test_corrupt_parts_are_named(tmp_path, table):
    d = write_landscape(tmp_path / "land", table, rows_per_part=600)
    part = d / "parts" / "host000-part00001.parquet"
    marker = part.with_suffix(".done")
    marker.write_text(json.dumps({"rows": 7}))
    with pytest.raises(PplawError, match="host000-part00001.parquet: 400 rows, but"):
        read_landscape(d)
    marker.write_text(json.dumps({"rows": 400}))
    pq.write_table(table.slice(600).drop_columns(["ppl"]), part)
    with pytest.raises(PplawError, match="column.*ppl missing"):
        read_landscape(d)
    bad = table.slice(600).set_column(4, "ppl", pa.array(np.r_[np.nan, np.ones(399)]))
    pq.write_table(bad, part)
    with pytest.raises(PplawError, match="part00001.parquet: row 0"):
        read_landscape(d)


def test_parts_must_add_up_to_the_summary(tmp_path, table):
    """A landscape whose part lost its .done marker (or gained rows) after summary.json was
    written used to be read without the missing chunks: a selection from 700 of 1000 rows,
    rc 0.  The parts are now checked against the summary's part, chunk and token counts."""
    d = write_landscape(tmp_path / "land", table, rows_per_part=300)
    (d / "parts" / "host000-part00001.done").unlink()
    with pytest.raises(PplawError, match=r"3 completed parts, but summary.json records 4"):
        read_landscape(d)
    d = write_landscape(tmp_path / "land2", table, rows_per_part=300)
    summary = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**summary, "chunks": 999}))
    with pytest.raises(PplawError, match=r"the parts hold 1000 chunks .* summary.json records 999"):
        read_landscape(d)
    (d / "summary.json").write_text(json.dumps({**summary, "parts": "4"}))
    with pytest.raises(PplawError, match=r"summary.json: field 'parts' missing or not an integer"):
        read_landscape(d)


def test_write_selection_is_atomic_and_deterministic(tmp_path, table):
    land = read_landscape(write_landscape(tmp_path / "land", table, rows_per_part=300))
    idx = np.array([3, 10, 999])
    out = write_selection(tmp_path / "a", land, idx, {"method": "x", "mu": np.float64(1.5)})
    write_selection(tmp_path / "b", land, idx, {"method": "x", "mu": np.float64(1.5)})
    sel = pq.read_table(out / "selection.parquet")
    assert sel.column_names == ["doc_id", "chunk", "n_tokens", "ppl"]
    assert sel.column("ppl").to_pylist() == table.column("ppl").to_numpy()[idx].tolist()
    for name in ("selection.parquet", "summary.json"):
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((out / "summary.json").read_text()) == {"method": "x", "mu": 1.5}
    assert sorted(p.name for p in out.iterdir()) == ["selection.parquet", "summary.json"]
