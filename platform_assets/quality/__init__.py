"""Quality machinery, declared once and used by every layer: rules (`Expect`, severities), Great Expectations run
in code, gates that hold across runs, and the declarative automation conditions. Imports: resources only."""
