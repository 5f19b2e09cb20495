"""The ledger's PostgreSQL adapter: one locked transaction per operation."""
