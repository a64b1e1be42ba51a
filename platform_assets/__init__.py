"""The Aegis code location, by domain; `definitions.py` is the one screen that assembles it.

Imports run one way (tests/test_architecture.py keeps it so): `quality` (the machinery of checks, gates and
automation) ← `layers` (the medallion pipeline) ← `protection` and `macro` ← `lake` (its upkeep) ←
`security` ← `definitions` ← `ops` (operator tools). Everything may import `resources`; nothing imports upward.
"""
