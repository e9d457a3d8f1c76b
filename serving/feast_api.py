"""Feast feature-server compatible bodies: `/get-online-features` responses and `/push`.

Response of `/get-online-features` (Feast's `OnlineFeaturesResponse` JSON):

    {"metadata": {"feature_names": ["carrier", ..., "carrier_flights_7d", ...]},
     "results": [{"values": [...], "statuses": [...], "event_timestamps": [...]}, ...]}

One result per column, entity key columns first (status PRESENT, event time 1970-01-01 as Feast
sends), then the features in the service's order; each result's lists are in request row order.
Values are JSON values (timestamps as Unix seconds, like Feast's `unix_timestamp_val`);
event times are RFC 3339 UTC (`...Z`), the epoch when a value has none (aggregations, missing
rows), as Feast does.

`/push` takes Feast's body (`push_source_name`, `df` as {column: [values]}, `to`). featurelib
pushes to one of its sources (the name is the source's name) and always both appends the rows to
the offline push log (its commit point, which keeps online == offline) and updates the online
store; `to` is validated and echoed. The answer summarizes what was written (Feast's clients
ignore the body).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import redis

from featurelib.errors import RepoError, SourceError
from featurelib.online.push import Pusher, PushError
from featurelib.online.read import OnlineResponse
from featurelib.online.server import RedisUnavailableError
from serving.errors import BadRequestError, FeatureNotFoundError, FeatureStoreUnavailableError

if TYPE_CHECKING:
    from serving.core import ScoringCore

EPOCH_TEXT = "1970-01-01T00:00:00Z"
PRESENT = "PRESENT"


def json_values(series: pl.Series) -> list[Any]:
    """A column's values as JSON-ready Python values (NaN -> null, timestamps -> Unix s)."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        series = series.dt.epoch("s")
    elif dtype.is_float():
        series = series.fill_nan(None)
    elif dtype in (pl.Date, pl.Time, pl.Duration) or isinstance(dtype, pl.Duration):
        series = series.cast(pl.String)
    return series.to_list()


def _timestamp(moment: datetime | None) -> str:
    if moment is None:
        return EPOCH_TEXT
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def online_features_response(
    keys: Mapping[str, pl.Series], response: OnlineResponse, names: Sequence[str]
) -> dict[str, Any]:
    """Feast's response body for entity `keys` and `response` (features named `names`)."""
    rows = response.features.height
    results: list[dict[str, Any]] = [
        {
            "values": json_values(series),
            "statuses": [PRESENT] * rows,
            "event_timestamps": [EPOCH_TEXT] * rows,
        }
        for series in keys.values()
    ]
    for column in response.features.columns:
        results.append(
            {
                "values": json_values(response.features.get_column(column)),
                "statuses": response.statuses[column],
                "event_timestamps": [_timestamp(t) for t in response.event_timestamps[column]],
            }
        )
    return {"metadata": {"feature_names": [*keys, *names]}, "results": results}


def rows_from_columns(df: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Feast's columnar `df` ({column: [values]}) as row objects (every column equally long)."""
    lengths = {name: len(values) for name, values in df.items()}
    if len(set(lengths.values())) > 1:
        raise BadRequestError(
            f"'df' columns differ in length: {lengths}", hint="send one value per row per column"
        )
    names = list(df)
    return [dict(zip(names, values, strict=True)) for values in zip(*df.values(), strict=True)]


def apply_push(core: ScoringCore, source: str, rows: Any, to: str) -> dict[str, Any]:
    """Validate and apply `rows` to `source` with a cached `Pusher` (caller holds its lock).

    `to` is Feast's push target: `online_and_offline` (the default: logged for training and
    served), `online` (served only: for rows the batch source already holds) or `offline`."""
    repo = core.definitions.repo
    key = (source, id(repo))
    pusher = core._pushers.get(key)
    if pusher is None:
        try:
            pusher = Pusher(core.store, repo, source, owner="serve")
        except RepoError as exc:
            raise FeatureNotFoundError(exc.what, where="push", hint=exc.hint) from None
        core._pushers = {k: v for k, v in core._pushers.items() if k[0] != source}
        core._pushers[key] = pusher
    try:
        batch, errors = pusher.validate(rows)
        if errors:
            error = PushError(source, errors, len(batch.positions) + len(errors))
            raise BadRequestError(error.what, where=error.where, hint=error.hint)
        result = pusher.apply(
            batch, now=core.clock(), offline=to != "online", online=to != "offline"
        )
    except (redis.RedisError, RedisUnavailableError) as exc:
        raise FeatureStoreUnavailableError(
            f"the online store did not answer: {exc}",
            where=f"push to source {source!r}",
            hint="nothing was lost if the push log was written; push the rows again later",
        ) from None
    except SourceError as exc:
        raise BadRequestError(exc.what, where=exc.where, hint=exc.hint) from None
    return {
        "source": result.source,
        "to": to,
        "received": result.received,
        "appended": result.appended,
        "duplicates": result.duplicates,
        "online": result.online,
        "ignored_columns": list(result.ignored_columns),
    }
