"""The checkpoint store: the verified format (manifest, parts, fingerprints), verification, housekeeping and
retention, keys and their rotation, per-person sealing, and the tables the store knows. Imports: databases,
lake and the shared modules of resources."""
