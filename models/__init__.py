"""Local model runtime: GGUF chat model, sentence embedder, sha256 manifest, test fakes.

Importing this package makes the Hugging Face libraries offline-only for the whole process;
it must happen before anything imports transformers or huggingface_hub, which read these
variables once at import time. The heavy adapters live in `models.embedder` and
`models.generator` and are not imported here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from models.manifest import (  # noqa: E402
    ModelEntry,
    ModelRegistry,
    bundled_models,
    sha256_of,
    verify,
)
from models.protocols import (  # noqa: E402
    ChatMessage,
    ContextLengthExceededError,
    Embedder,
    Generator,
    ModelError,
    ModelLoadError,
    ModelVerificationError,
)

__all__ = [
    "ChatMessage",
    "ContextLengthExceededError",
    "Embedder",
    "Generator",
    "ModelEntry",
    "ModelError",
    "ModelLoadError",
    "ModelRegistry",
    "ModelVerificationError",
    "bundled_models",
    "sha256_of",
    "verify",
]
