"""The medallion pipeline: source → bronze → silver (+ quarantine) → gold → serving → reports, the plain logic
each layer calls (generators, cleansing, aggregations, audit, dashboard, sales vs inflation), the table contracts,
the partitions, the metadata every asset reports, how a layer writes to the lake, and the layers' asset checks.
Imports: quality, resources."""
