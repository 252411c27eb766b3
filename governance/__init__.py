"""Governed data foundation: source tables, schemas, cleaning, pseudonyms and audited ingest."""
