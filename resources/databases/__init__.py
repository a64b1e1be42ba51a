"""The databases: the source (SQLite or PostgreSQL through ADBC), its tables read and written exactly (capture
for checkpoints, the restorer's one transaction), what is protected and grouped, and the warehouse with its
access rules. Imports: the shared modules of resources."""
