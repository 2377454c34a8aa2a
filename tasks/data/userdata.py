"""A plant's own data file, read through its dataset spec.

Headers are mapped to column names as the spec says (so the published AI4I file loads as it
is), categories become their codes (their position in the spec), the target's two values
become 0 and 1. A missing column, values of the wrong type, values outside a column's physical
range or a mostly empty column are refused, naming the column and the count of bad rows, so a
bad export is caught before anything trains on it; a few bad values (within a column's
allowance) drop their rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edgewave.serving.errors import Actionable
from edgewave.tasks.data.spec import Column, DatasetSpec

MISSING = ["nan", "na", "null", "none", ""]


class DataValidationError(ValueError, Actionable):
    """A user's data set does not match its dataset spec."""


def _read_table(path: Path) -> pd.DataFrame:
    """The file's cells as text; a missing, unreadable, empty or malformed file is refused naming it."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".parquet", ".pq"}:
        raise DataValidationError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    if path.is_file() and path.stat().st_size == 0:
        raise DataValidationError(f"{path}: the file is empty (0 bytes); expected a header row and data rows")
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_parquet(path).astype("string").fillna("")
    except FileNotFoundError:
        raise DataValidationError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: cannot read: {exc.__class__.__name__}: {exc}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataValidationError(f"{path}: not a readable {suffix[1:]} table: {exc}") from None
    except ValueError as exc:  # pyarrow's errors for a file that is not Parquet derive from it
        raise DataValidationError(f"{path}: not a readable {suffix[1:]} table: {exc}") from None


def _examples(text: pd.Series, bad: pd.Series) -> list[str]:
    return sorted(set(text[bad].head(3)))


def _coerce(raw: pd.Series, column: Column, source: Path) -> pd.Series:
    text = raw.astype("string").str.strip()
    missing = text.isna() | text.str.lower().isin(MISSING)
    where = f"{source}: column {column.source!r}"
    if column.kind == "category":
        bad = ~missing & ~text.isin(column.categories)
        if bad.any():
            raise DataValidationError(f"{where} has {int(bad.sum())} rows outside the categories "
                                      f"{column.categories} (e.g. {_examples(text, bad)})")
        values = text.map({c: float(i) for i, c in enumerate(column.categories)})
    else:
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = ~missing & values.isna()
        if bad.any():
            raise DataValidationError(f"{where} should be {column.kind} but {int(bad.sum())} rows are not numbers "
                                      f"(e.g. {_examples(text, bad)})")
        if column.kind == "int":
            fractional = values.notna() & (values != values.round())
            if fractional.any():
                raise DataValidationError(f"{where} should be int but {int(fractional.sum())} rows have fractions")
        if column.range is not None:
            low, high = column.range
            outside = values.notna() & ((values < low) | (values > high))
            if outside.sum() > column.max_missing_share * len(values):
                raise DataValidationError(f"{where} has {int(outside.sum())} rows outside its physical range "
                                          f"[{low:g}, {high:g}] {column.unit} (e.g. {_examples(text, outside)})")
            values = values.mask(outside)
    values = values.astype("float64")
    n_missing = int(values.isna().sum())
    if n_missing > column.max_missing_share * len(values):
        raise DataValidationError(f"{where} is missing, NaN or implausible in {n_missing} of {len(values)} rows "
                                  f"(at most {column.max_missing_share:.0%} allowed)")
    return values


def load_user_data(path: str | Path, spec: DatasetSpec) -> pd.DataFrame:
    """The file's rows as the spec's columns (named as in the spec) and the target as 0/1."""
    source = Path(path)
    raw = _read_table(source)
    wanted = [*spec.columns, spec.target]
    missing = [c.source for c in wanted if c.source not in raw.columns]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing} (the dataset spec {spec.name!r} expects "
                                  f"them); found {list(raw.columns)}")
    if raw.empty:
        raise DataValidationError(f"{source}: no rows")
    frame = pd.DataFrame({c.name: _coerce(raw[c.source], c, source) for c in spec.columns})
    target = raw[spec.target.source].astype("string").str.strip()
    negative, positive = spec.target.values
    labels = target.map({negative: 0.0, positive: 1.0})
    unknown = labels.isna() & ~target.str.lower().isin(MISSING)
    if unknown.any():
        raise DataValidationError(f"{source}: column {spec.target.source!r} must be {negative!r} or {positive!r} "
                                  f"but {int(unknown.sum())} rows hold {_examples(target, unknown)}")
    if labels.isna().sum() > spec.target.max_missing_share * len(labels):
        raise DataValidationError(f"{source}: column {spec.target.source!r} is missing in {int(labels.isna().sum())} "
                                  "rows")
    frame[spec.target.name] = labels
    frame = frame.dropna().reset_index(drop=True)
    frame[spec.target.name] = frame[spec.target.name].astype(np.int64)
    return frame
