"""Reading the transaction log (DuckDB), checking it, applying the data policies, and the per-customer summary."""
