"""Reading sources and spines into normalized Polars frames (UTC microsecond times, NaN as null)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.compile.polars_expr import TIMESTAMP, featurelib_dtype, polars_dtype
from featurelib.dtypes import DType
from featurelib.errors import FeaturelibError, SourceError, SpineError
from featurelib.sources import BatchSource

ORDER = "__order"  # source order: the tie-break after event and created timestamps
PUSH_LOG_DIR = "_push_log"  # under <repo root>/data/: rows pushed online, one dir per source


def to_utc(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Normalize a timestamp column to Datetime(us, UTC); naive values are read as UTC."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            expr = expr.dt.replace_time_zone("UTC")
        elif dtype.time_zone != "UTC":
            expr = expr.dt.convert_time_zone("UTC")
        return expr.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if dtype == pl.String:
        return expr.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    return expr.cast(TIMESTAMP)


def normalize(frame: pl.LazyFrame, timestamp_fields: list[str]) -> pl.LazyFrame:
    """UTC microsecond timestamps and NaN read as null (so NaN is a missing value everywhere)."""
    schema = frame.collect_schema()
    exprs = []
    for name, dtype in schema.items():
        if name in timestamp_fields or isinstance(dtype, pl.Datetime):
            exprs.append(to_utc(pl.col(name), dtype).alias(name))
        elif dtype.is_float():
            exprs.append(pl.col(name).cast(pl.Float64).fill_nan(None))
    return frame.with_columns(exprs) if exprs else frame


def _scan(source: BatchSource, root: Path) -> pl.LazyFrame:
    where = f"source {source.name!r}"
    if source.format == "duckdb":
        import duckdb

        con = duckdb.connect()
        try:
            con.execute("SET file_search_path = ?", [str(root)])
            frame: pl.DataFrame = con.sql(source.location).pl()
            return frame.lazy()
        except duckdb.Error as exc:
            raise SourceError(
                f"DuckDB query failed: {exc}",
                where=where,
                hint="check the SQL; relative file paths resolve against the feature repo",
            ) from exc
        finally:
            con.close()
    path = Path(source.location)
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise SourceError(
            f"{path} does not exist",
            where=where,
            hint="generate the data first (e.g. `featurelib demo-data`) or fix the path",
        )
    if source.format == "csv":
        return pl.scan_csv(path, try_parse_dates=True)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*.parquet") if PUSH_LOG_DIR not in f.parts)
        if not files:
            raise SourceError(f"no .parquet files under {path}", where=where)
        return pl.scan_parquet(files, hive_partitioning=True, hive_schema=None)
    return pl.scan_parquet(path)


def push_log_dir(root: Path, source_name: str) -> Path:
    """Where rows pushed to `source_name` are appended (see `featurelib.online.push`)."""
    return root / "data" / PUSH_LOG_DIR / source_name


def push_log_files(root: Path, source_name: str) -> list[Path]:
    """The source's push log files, in name (= append) order."""
    directory = push_log_dir(root, source_name)
    return sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []


def _scan_log(files: list[Path]) -> pl.LazyFrame:
    """The log files in order; runs of files sharing a schema are scanned together."""
    runs: list[tuple[list[tuple[str, pl.DataType]], list[Path]]] = []
    for file in files:
        schema = list(pl.read_parquet_schema(file).items())
        if runs and runs[-1][0] == schema:
            runs[-1][1].append(file)
        else:
            runs.append((schema, [file]))
    scans = [pl.scan_parquet(run) for _, run in runs]
    return scans[0] if len(scans) == 1 else pl.concat(scans, how="diagonal_relaxed")


def _source_missing(source: BatchSource, root: Path) -> bool:
    """No file of the source exists yet (its rows, if any, are all in the push log)."""
    if source.format == "duckdb":
        return False
    path = Path(source.location)
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        return not any(PUSH_LOG_DIR not in f.parts for f in path.rglob("*.parquet"))
    return not path.exists()


def read_source(source: BatchSource, root: Path) -> pl.LazyFrame:
    """The source's rows with normalized types and an `__order` column (source order).

    Rows pushed to the source (`featurelib.online.push`, appended as Parquet files under
    `<root>/data/_push_log/<source>/`) are part of it: they follow the source's own rows, file
    by file in name order, normalized the same way (columns matched by name, types relaxed to
    a common supertype). A source whose files do not exist yet reads as its push log alone.
    """
    timestamps = [source.timestamp_field]
    if source.created_timestamp_field:
        timestamps.append(source.created_timestamp_field)
    log_files = push_log_files(root, source.name)
    if not log_files:
        frame = normalize(_scan(source, root), timestamps)
    else:
        log = normalize(_scan_log(log_files), timestamps)
        if _source_missing(source, root):
            frame = log
        else:
            own = normalize(_scan(source, root), timestamps)
            frame = pl.concat([own, log], how="diagonal_relaxed")
    return prepare_source_frame(source, frame)


def prepare_source_frame(source: BatchSource, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Check a normalized frame against the source's definition, cast declared columns and
    number the rows (`__order`): what `read_source` does after reading."""
    timestamps = [source.timestamp_field]
    if source.created_timestamp_field:
        timestamps.append(source.created_timestamp_field)
    schema = frame.collect_schema()
    where = f"source {source.name!r}"
    for field in timestamps:
        if field not in schema:
            raise SourceError(
                f"timestamp column {field!r} is missing",
                where=where,
                hint=f"the data has columns: {', '.join(schema)}",
            )
    declared = source.columns or {}
    casts = []
    for name, dtype in declared.items():
        if name not in schema:
            raise SourceError(
                f"declared column {name!r} is missing from the data",
                where=where,
                hint=f"the data has columns: {', '.join(schema)}",
            )
        actual = featurelib_dtype(schema[name])
        if actual != dtype:
            if not (actual.is_numeric and dtype.is_numeric):
                raise SourceError(
                    f"column {name!r} is declared {dtype} but the data holds {actual}",
                    where=where,
                    hint="fix the declared schema or the data",
                )
            casts.append(pl.col(name).cast(polars_dtype(dtype)))
    if casts:
        frame = frame.with_columns(casts)
    return frame.with_row_index(ORDER)


def frame_columns(frame: pl.LazyFrame) -> dict[str, DType]:
    """The featurelib types of a source frame's columns (without the source-order column)."""
    return {n: featurelib_dtype(t) for n, t in frame.collect_schema().items() if n != ORDER}


def source_columns(source: BatchSource, root: Path) -> dict[str, DType]:
    """The featurelib types of the columns the source actually holds."""
    return frame_columns(read_source(source, root))


def read_spine(spine: Any, timestamp_column: str) -> pl.DataFrame:
    """A spine given as Polars/pandas/Arrow data or a Parquet path, with its timestamp in UTC."""
    if isinstance(spine, str | Path):
        path = Path(spine)
        if not path.exists():
            raise SpineError(f"spine file {path} does not exist")
        frame = pl.read_parquet(path)
    elif isinstance(spine, pl.LazyFrame):
        frame = spine.collect()
    elif isinstance(spine, pl.DataFrame):
        frame = spine
    else:
        try:
            frame = pl.from_pandas(spine) if hasattr(spine, "iloc") else pl.from_arrow(spine)  # type: ignore[assignment]
        except (TypeError, ValueError) as exc:
            raise SpineError(
                f"cannot read a spine from {type(spine).__name__}",
                hint="pass a polars/pandas DataFrame, a pyarrow Table or a Parquet path",
            ) from exc
    assert isinstance(frame, pl.DataFrame)
    if timestamp_column not in frame.columns:
        raise SpineError(
            f"spine has no timestamp column {timestamp_column!r}",
            hint=f"its columns are {frame.columns}; pass timestamp_column=...",
        )
    dtype = frame.schema[timestamp_column]
    ts = to_utc(pl.col(timestamp_column), dtype)
    out = frame.with_columns(ts.alias(timestamp_column))
    if out[timestamp_column].null_count() > frame[timestamp_column].null_count():
        raise SpineError(
            f"spine column {timestamp_column!r} holds values that are not timestamps",
            hint="use datetimes or ISO 8601 strings",
        )
    return out


def cast_keys(frame: pl.LazyFrame, keys: Mapping[str, DType]) -> pl.LazyFrame:
    """Entity keys in their declared type; values that do not convert become null."""
    return frame.with_columns(
        [pl.col(k).cast(polars_dtype(t), strict=False) for k, t in keys.items()]
    )


def write_parquet_atomically(
    frame: pl.DataFrame, path: Path, *, what: str = "Parquet file"
) -> Path:
    """Write `frame` to `path` atomically and durably: a temporary name in the same directory,
    fsync, rename over `path`, fsync the directory. Readers see the old file or the whole new
    one, never a part; a failure removes the temporary file and raises FeaturelibError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise FeaturelibError(
            f"cannot write the {what}: {exc}",
            where=str(path),
            hint="check free space and permissions, then retry",
        ) from exc
    return path
