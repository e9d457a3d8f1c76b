"""featurelib inside Feast: the only featurelib package that imports `feast`.

- `convert.to_feast(repo)`: DSL definitions -> Feast objects (`feast apply` registers them via
  the repo's `_feast_objects.py`, see `expose.py`), each carrying its featurelib spec in tags;
- `offline_store.FeaturelibOfflineStore`: featurelib's Polars engine as Feast's offline store;
- `registry.load_repo_from_registry(path)` / `registry.load_definitions(path)`: definitions read
  back from the Feast registry (the source of truth for serving after `feast apply`).

Submodules are imported on use: `import featurelib.feast` alone does not import Feast.
"""
