"""Continuous protection: every committed change of the protected tables, captured from PostgreSQL's logical
decoding (pgoutput) by a long-running process into the change log in the lake, and replayed onto a checkpoint to
bring a table to any commit. Imports: databases and the shared modules of resources."""
