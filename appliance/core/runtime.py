"""The heavy objects of a running appliance, built once: database, crypto, index, models."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from appliance.core.blobs import BlobStore
from appliance.core.config import Settings, check_safety
from appliance.core.crypto import Crypto, open_crypto
from appliance.core.db import make_engine, make_session_factory
from appliance.core.errors import IndexUnavailable, ModelUnavailable
from appliance.core.places import SYSTEM_KIND, VECTORS_OWNER
from appliance.core.scheduler import FairScheduler
from ingest.index import VectorIndex, VectorIndexError
from ingest.keyed import RECORD_NAME, VectorKey, open_keyed
from models.manifest import ModelRegistry
from models.protocols import Embedder, Generator, ModelError

EMBED_DIMENSION = 384


def set_offline_environment() -> None:
    """The appliance never reaches a model hub or analytics endpoint, whatever the caller set."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Runtime:
    """Everything a request, a job or a CLI command needs; models load on first use."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    crypto: Crypto
    blobs: BlobStore
    scheduler: FairScheduler
    _index: VectorIndex | None = None
    _embedder: Embedder | None = None
    _generator: Generator | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def model_registry(self) -> ModelRegistry:
        """Bundled and admin-registered models."""
        return ModelRegistry(self.settings.models_dir / "registry.json")

    def index(self) -> VectorIndex:
        """The vector index (opened on first use)."""
        with self._lock:
            if self._index is None:
                self._index = build_index(self.settings, self.crypto)
            return self._index

    def embedder(self) -> Embedder:
        """The embedding model (loaded and verified on first use)."""
        with self._lock:
            if self._embedder is None:
                # start-up cost: sentence-transformers imports torch (seconds), only when used
                from models.embedder import SentenceTransformerEmbedder

                m = self.settings.models
                try:
                    entry = self.model_registry().get(m.embedder)
                    self._embedder = SentenceTransformerEmbedder(
                        entry, device=m.embed_device, batch_size=m.embed_batch_size
                    )
                except ModelError as exc:
                    raise ModelUnavailable(str(exc)) from exc
            return self._embedder

    def generator(self) -> Generator:
        """The chat model (loaded and verified on first use)."""
        with self._lock:
            if self._generator is None:
                # start-up cost: llama-cpp-python loads its native library, only when used
                from models.generator import LlamaCppGenerator

                m = self.settings.models
                try:
                    entry = self.model_registry().get(m.chat_model)
                    self._generator = LlamaCppGenerator(
                        entry,
                        n_ctx=m.n_ctx,
                        n_threads=m.n_threads,
                        n_threads_batch=m.n_threads_batch,
                        n_gpu_layers=m.n_gpu_layers,
                    )
                except ModelError as exc:
                    raise ModelUnavailable(str(exc)) from exc
            return self._generator

    def close(self) -> None:
        """Release the index and the database pool."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        self.engine.dispose()


def build_index(settings: Settings, crypto: Crypto) -> VectorIndex:
    """Open the configured vector index backend, its vectors turned by the vector key.

    The key is a system data key (wrapped by the KEK like every other, so it rotates with
    the key file); the record of which key turned the vectors sits in the edge shard's
    directory, or beside the data for a server collection (``ingest.keyed``).
    """
    inner = _open_backend(settings)
    key = VectorKey(crypto.create_data_key(SYSTEM_KIND, VECTORS_OWNER), EMBED_DIMENSION)
    if settings.index.backend == "edge":
        record = settings.index_dir / RECORD_NAME
    else:
        record = settings.data_dir / f"index-{settings.index.collection}-{RECORD_NAME}"
    try:
        return open_keyed(inner, key, record)
    except VectorIndexError as exc:
        inner.close()
        raise IndexUnavailable(str(exc)) from exc


def _open_backend(settings: Settings) -> VectorIndex:
    try:
        if settings.index.backend == "edge":
            # start-up cost: the Qdrant engine's native module, only for this backend
            from ingest.qdrant_edge import QdrantEdgeIndex

            return QdrantEdgeIndex(settings.index_dir, EMBED_DIMENSION)
        from qdrant_client import QdrantClient

        # optional dependency: qdrant-client and gRPC, only for the scale-out backend
        from ingest.qdrant_server import QdrantServerIndex

        if not settings.index.url:
            raise IndexUnavailable("index.backend is 'server' but index.url is empty; set it.")
        key = settings.index.api_key.get_secret_value() if settings.index.api_key else None
        client = QdrantClient(url=settings.index.url, api_key=key)
        return QdrantServerIndex(client, settings.index.collection, EMBED_DIMENSION)
    except VectorIndexError as exc:
        raise IndexUnavailable(str(exc)) from exc


def open_runtime(
    settings: Settings,
    *,
    index: VectorIndex | None = None,
    embedder: Embedder | None = None,
    generator: Generator | None = None,
) -> Runtime:
    """Check the layout, open the database and the key material; models stay lazy."""
    set_offline_environment()
    check_safety(settings)
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        crypto=open_crypto(settings.key_file, settings.keystore_path),
        blobs=BlobStore(settings.blob_dir),
        scheduler=FairScheduler(max_queued_per_user=settings.chat.max_queued_per_user),
        _index=index,
        _embedder=embedder,
        _generator=generator,
    )
