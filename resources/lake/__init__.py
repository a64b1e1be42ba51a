"""The lake: Delta tables per layer (written, read, versioned, repaired, compacted, vacuumed, erased), its plain
files, its settings and the migration from the pre-Delta layout. Imports: the shared modules of resources."""
