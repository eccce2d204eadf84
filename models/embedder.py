"""Sentence-transformers adapter for the Embedder protocol (bundled: all-MiniLM-L6-v2)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from models.manifest import ModelEntry, verify
from models.protocols import ModelError, ModelLoadError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class SentenceTransformerEmbedder:
    """Embeds texts with a verified local sentence-transformers model directory."""

    def __init__(
        self,
        entry: ModelEntry,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        """Verify `entry`, then load it; `threads` sets torch's process-wide intra-op threads."""
        if entry.kind != "embedder":
            raise ModelError(f"Model {entry.name!r} is a {entry.kind} model, not an embedder.")
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}.")
        verify(entry)
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:
            torch.set_num_threads(threads)
        try:
            model = SentenceTransformer(
                str(entry.path),
                device=device,
                local_files_only=True,
                trust_remote_code=False,
                # Refuse pickled weights: a .bin checkpoint can run code when unpickled.
                model_kwargs={"use_safetensors": True},
            )
        except Exception as exc:
            raise ModelLoadError(
                f"sentence-transformers could not load embedder {entry.name!r} from "
                f"{entry.path} on device {device!r}: {exc}. Check that the directory is a "
                "complete sentence-transformers model and that the device exists."
            ) from exc
        dimension = model.get_embedding_dimension()
        max_tokens = model.max_seq_length
        if dimension is None or max_tokens is None:
            raise ModelLoadError(
                f"Embedder {entry.name!r} does not report its dimension and maximum sequence "
                "length; it is not a complete sentence-transformers model."
            )
        self.name = entry.name
        self.dimension: int = int(dimension)
        self.max_tokens: int = int(max_tokens)
        self.batch_size = batch_size
        self._model: SentenceTransformer = model
        self._lock = threading.Lock()
        # A private copy of the Rust tokenizer for counting: the model's own one is reconfigured
        # (truncation, padding) on every encode call and must not be used from two threads.
        counter: Any = copy.deepcopy(model.tokenizer.backend_tokenizer)
        counter.no_truncation()
        counter.no_padding()
        self._counter = counter

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Return a float32 array (len(texts), dimension) of L2-normalised embeddings."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Count tokens with the embedder's tokenizer, without special tokens or truncation."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)
