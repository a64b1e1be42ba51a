"""Operator tools outside the asset graph: `make doctor`, `make metrics` and the headless runner (`make demo`).
Imports: everything (the runner runs the assembled definitions)."""
