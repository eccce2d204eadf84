"""The appliance service: config, database, crypto, documents, ingestion, CLI and web app."""

__version__ = "0.1.0"
