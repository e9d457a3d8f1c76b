"""featurelib: define features once; identical values in training and in production."""

from featurelib.aggregation import (
    AggExpr,
    Aggregation,
    count,
    last,
    last_n,
    max,
    mean,
    min,
    stddev,
    sum,
)
from featurelib.dtypes import Bool, DType, Float64, Int64, List, String, Timestamp
from featurelib.entity import Entity
from featurelib.errors import (
    AggregateInRowExpressionError,
    DefinitionError,
    DuplicateNameError,
    ExpressionTypeError,
    FeaturelibError,
    RepoError,
    SourceError,
    SpecError,
    SpineError,
    UnknownColumnError,
    WindowError,
)
from featurelib.expr import Expr, col, lit, when
from featurelib.offline.engine import training_set
from featurelib.repo import Repo
from featurelib.sources import BatchSource, CsvSource, DuckDBSource, ParquetSource, RequestSource
from featurelib.spec import dumps, from_spec, loads
from featurelib.views import (
    AggregationView,
    FeatureService,
    FeatureView,
    OnDemandView,
    Projection,
)

__version__ = "0.1.0"


__all__ = [
    "AggExpr",
    "AggregateInRowExpressionError",
    "Aggregation",
    "AggregationView",
    "BatchSource",
    "Bool",
    "CsvSource",
    "DType",
    "DefinitionError",
    "DuckDBSource",
    "DuplicateNameError",
    "Entity",
    "Expr",
    "ExpressionTypeError",
    "FeatureService",
    "FeatureView",
    "FeaturelibError",
    "Float64",
    "Int64",
    "List",
    "OnDemandView",
    "ParquetSource",
    "Projection",
    "Repo",
    "RepoError",
    "RequestSource",
    "SourceError",
    "SpecError",
    "SpineError",
    "String",
    "Timestamp",
    "UnknownColumnError",
    "WindowError",
    "col",
    "count",
    "dumps",
    "from_spec",
    "last",
    "last_n",
    "lit",
    "loads",
    "max",
    "mean",
    "min",
    "stddev",
    "sum",
    "training_set",
    "when",
]
