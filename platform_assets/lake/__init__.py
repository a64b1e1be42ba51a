"""The lake's upkeep: the catalogue of its Delta tables, compaction and vacuum, and restoring a table or a day to
an earlier version. Imports: layers, macro, quality, resources."""
