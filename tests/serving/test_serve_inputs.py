"""Input columns checked against the feature service's declared types (no 500 on odd input)."""

from __future__ import annotations

import polars as pl
import pytest

import featurelib as fl
from serving.errors import BadRequestError
from serving.inputs import InputColumn, _convert


def test_integers_beyond_the_declared_range_are_a_400_naming_the_row() -> None:
    key = InputColumn("account", fl.Int64, "key")
    fine = pl.DataFrame({"account": pl.Series([1, 7], dtype=pl.UInt64)})
    assert _convert(fine, key, "infer").dtype == pl.Int64
    huge = pl.DataFrame({"account": pl.Series([1, None, 2**63 + 5], dtype=pl.UInt64)})
    with pytest.raises(BadRequestError, match=r"'account' row 2: 9223372036854775813 does not"):
        _convert(huge, key, "infer")
