"""The report files: a self-contained HTML page whose figures equal report.json's, a plot per
drifting feature, a trend over the run history, and a short text summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import skew_replay_cases as cases

from skew_monitor import history
from skew_monitor.render import TABLE_COLUMNS
from skew_monitor.run import RunConfig, RunOutcome, run_once

PROFILE_REFRESH = datetime(2024, 1, 20, 1, tzinfo=UTC)


class Page(HTMLParser):
    """Collects every tag with its attributes, and the text of the table cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[tuple[dict[str, str | None], str]] = []
        self._cell: dict[str, str | None] | None = None
        self._text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "td" and "data-key" in dict(attrs):
            self._cell, self._text = dict(attrs), []
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.cells.append((self._cell, "".join(self._text)))
            self._cell = None
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[RunOutcome], Path]:
    """Three runs into one report directory: clean, then a shifted score and a changed constant
    (drift + mismatch), then the same again."""
    base = tmp_path_factory.mktemp("report")
    tiny = cases.build_repo(base / "repo")
    reference = base / "training_sample.parquet"
    training = cases.spine(2000, datetime(2024, 1, 8, tzinfo=UTC), PROFILE_REFRESH, seed=3)
    cases.served(tiny, training).write_parquet(reference)
    requests = cases.spine(500, cases.LOG_START, cases.LOG_END)
    shifted = tiny.variant(
        base / "shifted",
        profiles=tiny.profiles.with_columns(
            score=pl.when(pl.col("ts") >= PROFILE_REFRESH)
            .then(pl.col("score") + 25)
            .otherwise(pl.col("score"))
        ),
    )
    out = base / "reports"
    outcomes = []
    for i, current in enumerate([tiny, shifted, shifted]):
        online = cases.served(current, requests)
        if i:
            online = online.with_columns(amount_with_tax=requests["req_amount"] * 1.25)
        logs = cases.log_frame(requests, online, service_version=current.service.version)
        config = RunConfig(service="shop", reference=str(reference), out_dir=out)
        outcomes.append(run_once(current.root, config, logs=logs, repo=current.repo))
    return outcomes, out


def _page(outcome: RunOutcome) -> Page:
    page = Page()
    page.feed(outcome.paths.html.read_text(encoding="utf-8"))
    page.close()
    return page


def test_files_and_exit_codes(runs: tuple[list[RunOutcome], Path]) -> None:
    outcomes, out = runs
    assert [o.exit_code for o in outcomes] == [0, 1, 1]
    for outcome in outcomes:
        assert outcome.paths.run_dir.parent == out
        assert {p.name for p in outcome.paths.run_dir.iterdir()} == {
            "report.html",
            "report.json",
            "summary.txt",
        }
        assert json.loads(outcome.paths.json.read_text()) == outcome.report
        assert outcome.paths.summary.read_text() == outcome.summary
    clean = outcomes[0].summary
    assert "[OK]" in clean
    assert "8/8 features match on every row" in clean
    assert "0 of 7 features drifted" in clean
    skewed = outcomes[1].summary
    assert "[BREACH]" in skewed
    assert "mismatch: amount_with_tax match rate 0.000000 < 0.999" in skewed
    assert "drift: score (" in skewed
    assert f"html: {outcomes[1].paths.html}" in skewed


def test_html_is_self_contained(runs: tuple[list[RunOutcome], Path]) -> None:
    page = _page(runs[0][2])
    tags = {tag for tag, _ in page.tags}
    assert "html" in tags
    assert "svg" in tags
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action"):
            assert name not in attrs, f"<{tag} {name}={attrs[name]!r}> points outside the file"
    css = "".join(page.styles)
    assert "url(" not in css
    assert "@import" not in css


def test_one_histogram_per_drifting_or_mismatching_feature(
    runs: tuple[list[RunOutcome], Path],
) -> None:
    outcome = runs[0][1]
    page = _page(outcome)
    histograms = [
        a["data-feature"] for t, a in page.tags if t == "svg" and a.get("data-plot") == "histogram"
    ]
    drifting = [f["feature"] for f in outcome.report["features"] if f["drifted"]]
    assert drifting == ["score"]
    flagged = [
        f["feature"]
        for f in outcome.report["features"]
        if f["drifted"] or f["replay_breached"] or f["expectations_failed"]
    ]
    assert "amount_with_tax" in flagged
    for name in flagged:
        assert histograms.count(name) == 1, name
    metric_bars = [
        a["data-feature"] for t, a in page.tags if t == "svg" and a.get("data-plot") == "metrics"
    ]
    assert set(flagged) <= set(metric_bars)
    # The score histogram plots the drift result's proportions, exactly.
    hist = next(f for f in outcome.report["features"] if f["feature"] == "score")["histogram"]
    assert len(hist["reference"]) == len(hist["current"]) == len(hist["edges"]) + 1
    (svg,) = [
        a
        for t, a in page.tags
        if t == "svg" and a.get("data-plot") == "histogram" and a["data-feature"] == "score"
    ]
    assert json.loads(svg["data-reference"] or "") == hist["reference"]
    assert json.loads(svg["data-current"] or "") == hist["current"]


def _display(value: Any) -> str:
    from skew_monitor.render import _fmt

    return _fmt(value)


def test_table_figures_equal_the_json(runs: tuple[list[RunOutcome], Path]) -> None:
    outcome = runs[0][1]
    page = _page(outcome)
    by_feature = {f["feature"]: f for f in outcome.report["features"]}
    seen = 0
    for attrs, text in page.cells:
        feature, key = attrs["data-feature"], attrs["data-key"]
        assert feature is not None
        assert key is not None
        expected = by_feature[feature][key]
        assert json.loads(attrs["data-value"] or "null") == expected, (feature, key)
        assert text == _display(expected)
        seen += 1
    assert seen == len(by_feature) * len(TABLE_COLUMNS)
    tax = by_feature["amount_with_tax"]
    assert (tax["match_rate"], tax["mismatches"]) == (0.0, 500)
    rendered = {(a["data-feature"], a["data-key"]): t for a, t in page.cells}
    assert rendered[("amount_with_tax", "mismatches")] == "500"
    assert rendered[("amount_with_tax", "match_rate")] == "0"
    assert float(rendered[("score", "psi")]) == pytest.approx(by_feature["score"]["psi"], rel=1e-3)


def test_history_and_trend(runs: tuple[list[RunOutcome], Path]) -> None:
    outcomes, out = runs
    past = history.load(out, "shop")
    assert [h["run_id"] for h in past] == [o.report["run_id"] for o in outcomes]
    assert [h["status"] for h in past] == ["ok", "breach", "breach"]
    assert past[1]["features"]["amount_with_tax"]["match_rate"] == 0.0
    assert past[2]["features"]["score"]["drifted"] is True
    html = outcomes[2].paths.html.read_text()
    page = _page(outcomes[2])
    trends = [a for t, a in page.tags if t == "svg" and a.get("data-plot") == "trend"]
    assert len(trends) == 3  # breaches per run, lowest match rate, PSI of flagged features
    # Three runs: a point per run on each line; runs 2 and 3 have one mismatching feature.
    assert html.count("<polyline") == 3 + 1 + 2  # 3 counts, lowest match rate, PSI of 2 features
    assert "<title>features breaching per run</title>" in html
    mismatching = _trend_points(html, "features breaching per run", series=0)
    (_, first_y), (_, second_y), (_, third_y) = mismatching
    assert first_y > second_y == third_y  # 0, then 1 and 1 (SVG y grows downwards)
    # A torn line (a writer that crashed mid-line) is skipped, not fatal.
    with (out / "history.jsonl").open("a") as handle:
        handle.write('{"run_id": "torn"')
    assert len(history.load(out, "shop")) == 3
    assert history.load(out, "other_service") == []


def _trend_points(html: str, title: str, series: int) -> list[tuple[float, float]]:
    """The (x, y) points of one line of the trend plot titled `title`."""
    import re

    svg = html.split(f"<title>{title}</title>", 1)[1].split("</svg>", 1)[0]
    line = re.findall(r'<polyline points="([^"]+)"', svg)[series]
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.split())]
