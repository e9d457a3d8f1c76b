"""The Feast on-demand feature view class featurelib registers its on-demand views with."""

from __future__ import annotations

from feast.on_demand_feature_view import OnDemandFeatureView

from featurelib.errors import DefinitionError


class FeaturelibOnDemandFeatureView(OnDemandFeatureView):
    """An `OnDemandFeatureView` whose schema comes from featurelib's type checker.

    `feast apply` calls `infer_features()` on every on-demand view
    (feast/feature_store.py, `_make_inferences`): Feast runs the UDF on one random row and
    requires each declared Field, description included, to equal a Field it infers from the
    first output value (feast/on_demand_feature_view.py, `infer_features` /
    `_feature_exists_in_inferred`). That rejects any feature whose value is null on Feast's sample
    row (division by zero, `when` without a match) and any Field with a description. featurelib
    already typed every feature and casts the UDF's output to that type, so this class keeps the
    declared schema and only checks that the UDF runs and returns every declared feature.

    Only the object `feast apply` imports is of this class; the registry stores a plain
    OnDemandFeatureView proto, and readers get Feast's own class back.
    """

    def infer_features(self) -> None:
        assert self.feature_transformation is not None
        sample = self._construct_random_input(singleton=False)
        try:
            output = self.feature_transformation.transform(sample)
        except Exception as exc:
            raise DefinitionError(
                f"the UDF failed on Feast's sample row: {type(exc).__name__}: {exc}",
                where=f"on-demand view {self.name!r}",
                hint="check the view's expressions with fl.training_set on a small spine",
            ) from exc
        missing = [f.name for f in self.features if f.name not in output]
        if missing:
            raise DefinitionError(
                f"the UDF did not return features {missing}",
                where=f"on-demand view {self.name!r}",
                hint="re-run `feast apply`; the UDF is generated from the definition",
            )
