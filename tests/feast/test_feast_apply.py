"""`feast apply` / `feast plan` on the flights demo repo, and definitions read back from Feast."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from feast import FeatureStore

import featurelib as fl
from featurelib.feast.registry import load_definitions, load_repo_from_registry
from featurelib.feast.types import KIND, SPEC, VERSION

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Feast warns about on-demand views on every apply/retrieval; featurelib computes them.
pytestmark = pytest.mark.filterwarnings("ignore:On demand feature view is an experimental")


def _feast_entity_names(repo: fl.Repo) -> set[str]:
    return {
        e.name if len(e.join_keys) == 1 else f"{e.name}__{k}"
        for e in repo.entities.values()
        for k in e.key_names
    }


def test_apply_registers_every_definition(applied_repo: Path) -> None:
    dsl = fl.Repo.load(applied_repo)
    store = FeatureStore(repo_path=str(applied_repo))
    entities = {e.name: e for e in store.list_entities()}
    assert set(entities) == _feast_entity_names(dsl)  # route -> route__origin, route__dest
    assert entities["route__dest"].join_key == "dest"
    sources = {s.name: s for s in store.list_data_sources()}
    assert set(sources) == {*dsl.sources, *dsl.request_sources}
    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {*dsl.feature_views, *dsl.aggregation_views}
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    assert set(odfvs) == set(dsl.on_demand_views)
    services = {s.name: s for s in store.list_feature_services()}
    assert set(services) == set(dsl.feature_services)

    for name, view in {**dsl.feature_views, **dsl.aggregation_views}.items():
        fv = views[name]
        assert fv.tags[SPEC] == fl.dumps(view)
        assert fv.tags[VERSION] == view.version
        assert [f.name for f in fv.features] == view.feature_names()
        assert {f.name for f in fv.entity_columns} == set(view.join_keys)
    assert views["carrier_delays"].tags[KIND] == "aggregation_view"
    assert views["weather_at_origin"].ttl.total_seconds() == 3 * 3600
    assert views["plane_info"].ttl.total_seconds() == 0  # no TTL
    recent = next(f for f in views["plane_delays"].features if f.name.startswith("plane_recent"))
    assert str(recent.dtype) == "Array(Float64)"  # last_n -> List(Float64)
    odfv = odfvs["flight_context"]
    assert odfv.mode == "python"
    assert odfv.tags[SPEC] == fl.dumps(dsl.on_demand_views["flight_context"])
    assert set(odfv.source_request_sources) == {"flight_request"}
    used = {
        n: [f.name for f in p.features] for n, p in odfv.source_feature_view_projections.items()
    }
    assert used == {"plane_info": ["year_built"], "plane_delays": ["plane_distance_mean_28d"]}
    service = dsl.service("flight_delay")
    refs = [
        f"{p.name_to_use()}:{f.name}"
        for p in services["flight_delay"].feature_view_projections
        for f in p.features
    ]
    assert refs == [f"{p.view.name}:{n}" for p in service.projections for n, _ in p.features]
    assert "Created feature service flight_delay" in _ANSI.sub(
        "", (applied_repo / "apply.log").read_text()
    )


def test_registry_round_trips_every_definition(applied_repo: Path) -> None:
    registered = load_repo_from_registry(applied_repo)
    files = fl.Repo.load(applied_repo)
    assert registered.root == files.root
    for kind in (
        "entities",
        "sources",
        "request_sources",
        "feature_views",
        "aggregation_views",
        "on_demand_views",
        "feature_services",
    ):
        assert getattr(registered, kind) == getattr(files, kind), kind
    assert load_definitions(applied_repo) == registered


def test_definitions_come_from_the_python_files_before_apply(fresh_repo: Path) -> None:
    assert load_definitions(fresh_repo) == fl.Repo.load(fresh_repo)
    with pytest.raises(fl.RepoError, match="feast apply"):
        load_repo_from_registry(fresh_repo)


def test_plan_shows_no_diff_when_nothing_changed(applied_repo: Path, feast_cli: Any) -> None:
    run = feast_cli(applied_repo, "plan")
    assert run.returncode == 0, run.stderr
    assert "No changes to registry" in _ANSI.sub("", run.stdout)


def test_plan_shows_a_changed_window_and_expressions(
    clone_applied: Callable[[], Path], feast_cli: Any
) -> None:
    repo = clone_applied()
    definitions = repo / "definitions.py"
    text = definitions.read_text()
    edits = {
        'fl.max("arr_delay").windows("1d", "7d"': 'fl.max("arr_delay").windows("1d", "14d"',
        '"low_visibility": col("visib") < 3': '"low_visibility": col("visib") < 2',
        '"flight_distance": col("distance"),': '"flight_distance": col("distance") * 1.5,',
    }
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    definitions.write_text(text)

    run = feast_cli(repo, "plan")
    assert run.returncode == 0, run.stderr
    out = _ANSI.sub("", run.stdout)
    updated = set(re.findall(r"^Updated (?:feature view|on demand feature view) (\w+)$", out, re.M))
    # route_delays (window), weather_at_origin (expression), flight_context (on-demand expression)
    assert updated == {"route_delays", "weather_at_origin", "flight_context"}
    assert "Updated feature service flight_delay" in out
    assert "route_arr_delay_max_14d" in out  # the new window's feature
    assert '\\"value\\":2' in out  # the new literal, in the feature's description
    assert "feature_transformation.body_text" in out  # the on-demand UDF source changed
    assert "Created" not in out
    assert "Deleted" not in out
