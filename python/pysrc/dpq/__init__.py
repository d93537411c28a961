"""dpq: differentially private analytics over people's event logs.

    import dpq
    s = dpq.Session("mydata")
    t = s.query("SELECT chat_kind, COUNT(*) AS n FROM messages GROUP BY chat_kind", epsilon=0.5)
    t.to_pandas()            # chat_kind, n, n_stddev, n_ci_low, n_ci_high
    dpq.privacy(t)           # what it cost: epsilon, delta, ledger entry, bounds, bias

Every number computed from private rows is bounded per person, noised and
charged to the dataset's budget ledger before it is returned; asking the same
question again replays the stored answer at no cost (``fresh=True`` pays for
new noise).
"""

from __future__ import annotations

import json
from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.ipc

from . import _dpq
from ._dpq import (
    BudgetExhausted,
    ConfigError,
    DataError,
    Error,
    FailedError,
    InternalError,
    LedgerError,
    QueryError,
    Refused,
)

__all__ = [
    "Session",
    "privacy",
    "init",
    "generate",
    "ingest",
    "Error",
    "Refused",
    "QueryError",
    "ConfigError",
    "BudgetExhausted",
    "LedgerError",
    "DataError",
    "FailedError",
    "InternalError",
]

Number = Union[int, float, str]
Path = Union[str, "PathLike[str]"]

_META_KEY = b"dpq"


def _table(ipc: bytes, meta: str) -> pa.Table:
    table = pyarrow.ipc.open_stream(pa.BufferReader(ipc)).read_all()
    metadata = dict(table.schema.metadata or {})
    metadata[_META_KEY] = meta.encode()
    return table.replace_schema_metadata(metadata)


def privacy(table: pa.Table) -> Dict[str, Any]:
    """What a table returned by :meth:`Session.query` cost and what bounding cut.

    Keys: ``privacy`` (epsilon, delta spent and charged, remaining budget,
    ledger entry, replayed, mechanism, limits, analyst), ``bias`` (the DP
    estimate of the share of people whose rows were cut) and ``notes``.
    Amounts are exact decimals, as strings.
    """
    metadata = table.schema.metadata or {}
    if _META_KEY not in metadata:
        raise ValueError("this table did not come from dpq.Session.query")
    meta = json.loads(metadata[_META_KEY])
    meta.pop("json", None)
    return meta


class Session:
    """A dataset directory opened for differentially private analysis.

    ``analyst`` names who is asking (recorded with every charge; default
    ``$DPQ_ANALYST``, else the OS user). Quotas in the dataset's
    ``analysts.toml`` apply to that name.
    """

    def __init__(self, path: Path, analyst: Optional[str] = None) -> None:
        self._s = _dpq.Session(str(path), analyst)

    @property
    def analyst(self) -> str:
        return self._s.analyst

    def query(
        self,
        sql: str,
        *,
        epsilon: Optional[Number] = None,
        delta: Optional[Number] = None,
        mechanism: Optional[str] = None,
        confidence: Optional[float] = None,
        max_rows_per_unit: Optional[int] = None,
        max_groups_per_unit: Optional[int] = None,
        max_rows_per_group: Optional[int] = None,
        auto_bounds: Optional[bool] = None,
        fresh: bool = False,
    ) -> pa.Table:
        """Answer an aggregate SQL query with differential privacy.

        Returns a ``pyarrow.Table``: the query's columns, and after each noisy
        column ``c`` its ``c_stddev``, ``c_ci_low`` and ``c_ci_high``.
        :func:`privacy` reads what the answer cost. Parameters not given come
        from dpq.toml's ``[defaults]``; epsilon and delta are exact decimals
        (a float is taken by its shortest decimal form).
        """
        ipc, meta = self._s.query(
            sql,
            epsilon,
            delta,
            mechanism,
            confidence,
            max_rows_per_unit,
            max_groups_per_unit,
            max_rows_per_group,
            auto_bounds,
            fresh,
        )
        return _table(ipc, meta)

    def explain(self, sql: str, **options: Any) -> Dict[str, Any]:
        """What ``sql`` would cost and how accurate it would be; spends nothing.

        Same options as :meth:`query` (except ``fresh``). The dict has the
        plan's fields and its human-readable ``text``.
        """
        j, text = self._s.explain(
            sql,
            options.get("epsilon"),
            options.get("delta"),
            options.get("mechanism"),
            options.get("confidence"),
            options.get("max_rows_per_unit"),
            options.get("max_groups_per_unit"),
            options.get("max_rows_per_group"),
            options.get("auto_bounds"),
        )
        out = json.loads(j)
        out["text"] = text
        return out

    def budget(self) -> Dict[str, Any]:
        """The dataset's privacy budget: total, spent, remaining, and the rule that governs."""
        return json.loads(self._s.budget())

    def verify(self, anchor: Optional[str] = None) -> Dict[str, Any]:
        """Verify the ledger (against a published head ``ENTRIES:HASH`` if given)."""
        return json.loads(self._s.verify(anchor))

    def report_plan(self, spec: Path) -> Dict[str, Any]:
        """Plan a report spec: each section's epsilon and expected error; spends nothing."""
        j, text = self._s.report_plan(str(spec))
        out = json.loads(j)
        out["text"] = text
        return out

    def report(self, spec: Path, out: Optional[Path] = None, fresh: bool = False) -> Dict[str, Any]:
        """Run a report spec (charged once); write index.html, report.md and report.json into ``out``."""
        return json.loads(self._s.report(str(spec), None if out is None else str(out), fresh))

    def reload(self) -> None:
        """See the data as it is now (after the data owner ingested more)."""
        self._s.reload()


def ingest(path: Path, table: str, files: Union[Path, Sequence[Path]], *, force: bool = False, format: Optional[str] = None) -> Dict[str, Any]:
    """Ingest CSV, JSON Lines or Parquet files into a declared table of the
    dataset in ``path``: the data owner's operation (it writes private data and
    reports on it), deliberately not a method of :class:`Session`."""
    if isinstance(files, (str, PathLike)):
        files = [files]
    return json.loads(_dpq.ingest(str(path), table, [str(f) for f in files], force, format))


def init(path: Path) -> None:
    """Create a dataset directory with a commented dpq.toml."""
    _dpq.init(str(path))


def generate(
    users: int,
    days: int,
    out: Path,
    *,
    seed: int = 42,
    format: str = "csv",
    start: str = "2025-01-01",
    messages_per_day: float = 2.0,
) -> Dict[str, Any]:
    """Generate synthetic event logs of a messaging app (users, messages, calls, payments, emoji)."""
    return json.loads(_dpq.generate(users, days, str(out), seed, format, start, messages_per_day))
