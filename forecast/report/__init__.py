"""The self-contained HTML report: its sections, charts and template."""
