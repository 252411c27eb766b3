"""Governed data foundation: source tables, schemas, cleaning, pseudonymisation and audited ingest."""
