"""The Python package against a real dataset: generate, ingest, query (a
pyarrow.Table with interval columns and its privacy metadata), replay, explain,
budget, verify, report, and the error taxonomy."""

import json
from pathlib import Path

import pyarrow as pa
import pytest

import dpq

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpq")
    data = root / "data"
    dpq.init(data)
    logs = root / "logs"
    summary = dpq.generate(150, 30, logs, seed=3)
    assert summary["users"] == 150
    for t in ["emoji_catalog", "users", "messages", "calls", "payments"]:
        r = dpq.ingest(data, t, logs / f"{t}.csv")
        assert r["table_rows"] > 0
    # ingest is the data owner's, not an analyst's session's
    assert not hasattr(dpq.Session, "ingest")
    return data


def test_query_returns_an_arrow_table_with_intervals_and_privacy(data):
    s = dpq.Session(data, analyst="pytest")
    t = s.query("SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind", epsilon=0.5)
    assert isinstance(t, pa.Table)
    assert t.column_names == ["chat_kind", "n", "n_stddev", "n_ci_low", "n_ci_high"]
    assert t.num_rows >= 1
    for lo, v, hi in zip(t["n_ci_low"].to_pylist(), t["n"].to_pylist(), t["n_ci_high"].to_pylist()):
        assert lo <= v <= hi and v >= 0
    p = dpq.privacy(t)
    assert p["privacy"]["epsilon"] == "0.5"
    assert p["privacy"]["analyst"] == "pytest"
    assert p["privacy"]["replayed"] is False
    assert p["bias"]["kind"] in ("estimated", "none", "not_estimated")
    df = t.to_pandas()
    assert list(df.columns)[:2] == ["chat_kind", "n"]
    # the same question again: the stored answer, free
    again = s.query("SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind", epsilon=0.5)
    assert again.equals(t.replace_schema_metadata(None)) or again["n"].to_pylist() == t["n"].to_pylist()
    assert dpq.privacy(again)["privacy"]["replayed"] is True
    assert dpq.privacy(again)["privacy"]["epsilon"] == "0"


def test_an_empty_answer_keeps_its_schema(data):
    s = dpq.Session(data, analyst="pytest")
    t = s.query("SELECT kind, COUNT(*) AS n FROM calls WHERE kind = 'none' GROUP BY kind", epsilon="0.1", delta="1e-8")
    assert t.column_names == ["kind", "n", "n_stddev", "n_ci_low", "n_ci_high"]


def test_explain_budget_and_verify_spend_nothing(data):
    s = dpq.Session(data, analyst="pytest")
    before = s.budget()
    e = s.explain("SELECT COUNT(*) FROM messages", epsilon=0.5)
    assert "cost: ε=0.5" in e["text"]
    assert e["epsilon"] == "0.5"
    assert s.budget()["spent_epsilon"] == before["spent_epsilon"]
    v = s.verify()
    assert v["ok"] is True


def test_errors_mirror_the_taxonomy(data):
    s = dpq.Session(data, analyst="pytest")
    with pytest.raises(dpq.Refused) as r:
        s.query("SELECT MAX(length) FROM messages")
    assert "fix:" in str(r.value)
    with pytest.raises(dpq.QueryError):
        s.query("SELEC nonsense")
    with pytest.raises(dpq.QueryError):
        s.query("SELECT COUNT(*) FROM messages", epsilon=-1)
    with pytest.raises(dpq.BudgetExhausted):
        s.query("SELECT COUNT(*) FROM calls", epsilon=1000)
    with pytest.raises(dpq.Error):
        dpq.Session(data.parent / "nowhere")
    assert issubclass(dpq.BudgetExhausted, dpq.Error)


def test_a_report_runs_and_writes_its_files(data, tmp_path):
    s = dpq.Session(data, analyst="pytest")
    spec = REPO / "queries" / "annual_report.toml"
    plan = s.report_plan(spec)
    assert "section" in plan["text"]
    r = s.report(spec, out=tmp_path / "report")
    assert (tmp_path / "report" / "index.html").exists()
    assert r["privacy"]["entry"] >= 1
    assert json.loads((tmp_path / "report" / "report.json").read_text())["title"] == r["title"]
