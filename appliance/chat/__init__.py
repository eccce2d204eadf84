"""chat domain."""
