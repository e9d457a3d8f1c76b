"""featurelib skew monitor: row-level consistency replay, distribution drift, Great
Expectations validation and nightly reports."""
