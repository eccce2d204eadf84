"""Ingestion: files to elements (unstructured) to chunks to embeddings to the vector index.

    parse/          a file to elements (package: detect, office, pdf, ocr, ...)
    chunk.py        elements to chunks                errors.py   the IngestError tree
    index.py        the VectorIndex Protocol and its data types
    qdrant_common.py, qdrant_edge.py, qdrant_server.py   the Qdrant backends

Of our own code this package imports ``models`` at most, never ``appliance``.
"""

import os

# Importing unstructured pings an analytics endpoint unless DO_NOT_TRACK is non-empty, and
# the product is offline; setdefault alone would keep an empty value, which does not opt out.
os.environ.setdefault("DO_NOT_TRACK", "1")
if not os.environ["DO_NOT_TRACK"].strip():
    os.environ["DO_NOT_TRACK"] = "1"
# unstructured also logs an advert with a link on first use.
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
