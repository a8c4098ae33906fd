"""analysis/: tables, phases, claims, plots and reports, from Parquet alone."""
