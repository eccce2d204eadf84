"""Per-document access control: who may read and manage a document, and grant changes."""
