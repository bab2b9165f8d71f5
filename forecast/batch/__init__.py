"""The monthly batch: the pipeline, the runs registry, the output files and month-over-month drift."""
