"""Feast's view of this repo: every featurelib definition as a Feast object.

`feast apply` / `feast plan` import every .py file here and register the Feast objects they find
(featurelib's DSL objects in definitions.py are not Feast objects and are ignored by Feast). This
file converts the DSL definitions (see featurelib/feast/convert.py). The leading underscore keeps
featurelib's own loader (`fl.Repo.load`, which skips `_*.py`) from importing Feast.
"""

from featurelib.feast.expose import feast_objects

globals().update(feast_objects(__file__))
