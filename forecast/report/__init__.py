"""The self-contained HTML report: the run folder it reads (``run_folder``), its sections, charts and template."""
