"""Model manifest: hashing, verification, GGUF metadata and the admin model registry."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from models.manifest import (
    MINILM_NAME,
    SMOLLM2_NAME,
    ModelEntry,
    ModelRegistry,
    bundled_models,
    read_gguf_metadata,
    sha256_of,
    verify,
)
from models.protocols import ModelError, ModelVerificationError

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _gguf_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, metadata: dict[str, Any], *, version: int = 3) -> Path:
    """Write a header-only GGUF file: str, int (u32), float (f32), list[str] / list[int] values."""
    body = b""
    for key, value in metadata.items():
        body += _gguf_string(key)
        if isinstance(value, str):
            body += struct.pack("<I", 8) + _gguf_string(value)
        elif isinstance(value, bool):
            body += struct.pack("<I?", 7, value)
        elif isinstance(value, int):
            body += struct.pack("<II", 4, value)
        elif isinstance(value, float):
            body += struct.pack("<If", 6, value)
        elif value and isinstance(value[0], str):
            body += struct.pack("<IIQ", 9, 8, len(value))
            body += b"".join(_gguf_string(v) for v in value)
        else:
            body += struct.pack("<IIQ", 9, 5, len(value))
            body += b"".join(struct.pack("<i", v) for v in value)
    header = b"GGUF" + struct.pack("<IQQ", version, 0, len(metadata))
    path.write_bytes(header + body + b"\x00" * 64)
    return path


def chat_gguf(path: Path, *, context_length: int = 4096) -> Path:
    """A small GGUF that looks like a chat model to the registry."""
    return write_gguf(
        path,
        {
            "general.architecture": "llama",
            "general.name": "tiny test model",
            "llama.context_length": context_length,
            "llama.rope.freq_base": 10000.0,
            "tokenizer.ggml.tokens": ["<s>", "</s>", "hello", "wörld"],
            "tokenizer.ggml.token_type": [1, 3, 1, 1],
            "tokenizer.ggml.add_bos_token": False,
            "tokenizer.chat_template": CHATML,
        },
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_for(path: Path, digest: str, *, kind: str = "chat") -> ModelEntry:
    return ModelEntry(
        name="test-model",
        kind=kind,  # type: ignore[arg-type]
        path=path,
        sha256=digest,
        context_length=2048,
        licence="MIT",
        source="registered",
    )


# --- hashing ---------------------------------------------------------------------------------


def test_sha256_of_file_matches_hashlib_across_block_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 12345))
    assert sha256_of(path) == sha(path)


def test_sha256_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_of(path) == hashlib.sha256(b"").hexdigest()


def make_model_dir(root: Path) -> Path:
    (root / "1_Pooling").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(b"\x01\x02\x03" * 1000)
    (root / "1_Pooling" / "config.json").write_text('{"pooling": "mean"}')
    return root


def test_sha256_of_directory_is_hash_of_sorted_sha256sum_lines(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path / "model")
    files = sorted(["1_Pooling/config.json", "config.json", "model.safetensors"])
    lines = "".join(f"{sha(root / rel)}  {rel}\n" for rel in files)
    assert sha256_of(root) == hashlib.sha256(lines.encode()).hexdigest()


def test_sha256_of_directory_ignores_creation_order(tmp_path: Path) -> None:
    a = make_model_dir(tmp_path / "a")
    b = tmp_path / "b"
    (b / "1_Pooling").mkdir(parents=True)
    for rel in ["model.safetensors", "1_Pooling/config.json", "config.json"]:
        (b / rel).write_bytes((a / rel).read_bytes())
    assert sha256_of(a) == sha256_of(b)


@pytest.mark.parametrize("change", ["content", "rename", "add", "remove"])
def test_sha256_of_directory_changes_with_any_file(tmp_path: Path, change: str) -> None:
    root = make_model_dir(tmp_path / "model")
    before = sha256_of(root)
    if change == "content":
        (root / "1_Pooling" / "config.json").write_text('{"pooling": "max!"}')
    elif change == "rename":
        (root / "config.json").rename(root / "config2.json")
    elif change == "add":
        (root / "extra.py").write_text("print('hi')")
    else:
        (root / "config.json").unlink()
    assert sha256_of(root) != before


# --- verification ----------------------------------------------------------------------------


def test_verify_accepts_matching_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"model bytes")
    verify(entry_for(path, sha(path)))
    root = make_model_dir(tmp_path / "emb")
    verify(entry_for(root, sha256_of(root), kind="embedder"))


def test_verify_refuses_mismatch_with_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"model bytes")
    wrong = "0" * 64
    with pytest.raises(ModelVerificationError) as info:
        verify(entry_for(path, wrong))
    message = str(info.value)
    assert str(path) in message
    assert wrong in message
    assert sha(path) in message
    assert "register" in message  # says what to do


def test_verify_refuses_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gone.gguf"
    with pytest.raises(ModelVerificationError, match="does not exist") as info:
        verify(entry_for(path, "a" * 64))
    assert str(path) in str(info.value)


def test_verify_cache_does_not_hide_tampering_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"original bytes")
    digest = sha(path)
    verify(entry_for(path, digest))
    st = path.stat()
    path.write_bytes(b"tampered bytes")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ModelVerificationError, match="mismatch"):
        verify(entry_for(path, digest))


def test_verify_cache_notices_tampering_inside_a_directory(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path / "emb")
    digest = sha256_of(root)
    verify(entry_for(root, digest, kind="embedder"))
    (root / "1_Pooling" / "config.json").write_text('{"pooling": "cls!"}')
    with pytest.raises(ModelVerificationError, match="mismatch"):
        verify(entry_for(root, digest, kind="embedder"))


def test_verified_result_is_per_expected_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"bytes")
    verify(entry_for(path, sha(path)))
    with pytest.raises(ModelVerificationError):
        verify(entry_for(path, "f" * 64))


# --- bundled models (no hashing here; the slow integration tests verify them) ---------------


def test_bundled_models_are_pinned() -> None:
    entries = {e.name: e for e in bundled_models()}
    assert set(entries) == {SMOLLM2_NAME, MINILM_NAME}
    chat, embedder = entries[SMOLLM2_NAME], entries[MINILM_NAME]
    assert (chat.kind, embedder.kind) == ("chat", "embedder")
    assert chat.path.is_file()
    assert chat.path.suffix == ".gguf"
    assert (embedder.path / "model.safetensors").is_file()
    assert (chat.context_length, embedder.context_length) == (8192, 256)
    for entry in entries.values():
        assert len(entry.sha256) == 64
        assert entry.source == "bundled"
        assert entry.licence == "Apache-2.0"


def test_bundled_gguf_header_agrees_with_manifest() -> None:
    chat = next(e for e in bundled_models() if e.kind == "chat")
    metadata = read_gguf_metadata(chat.path)
    assert metadata["llama.context_length"] == chat.context_length
    assert metadata["general.license"].lower() == chat.licence.lower()
    assert "tokenizer.chat_template" in metadata


# --- GGUF metadata ---------------------------------------------------------------------------


def test_read_gguf_metadata_reads_scalars_and_skips_arrays(tmp_path: Path) -> None:
    metadata = read_gguf_metadata(chat_gguf(tmp_path / "m.gguf", context_length=1234))
    assert metadata["llama.context_length"] == 1234
    assert metadata["general.name"] == "tiny test model"
    assert metadata["tokenizer.chat_template"] == CHATML
    assert metadata["tokenizer.ggml.add_bos_token"] is False
    assert metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert "tokenizer.ggml.tokens" not in metadata


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"PK\x03\x04 a zip file", "magic"),
        (b"GGUF" + struct.pack("<I", 1), "version 1"),
        (b"GGUF" + struct.pack("<IQ", 3, 0), "truncated"),
    ],
)
def test_read_gguf_metadata_refuses_bad_files(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=why):
        read_gguf_metadata(path)


def test_read_gguf_metadata_refuses_absurd_string_length(tmp_path: Path) -> None:
    path = tmp_path / "hostile.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 40))
    with pytest.raises(ModelError, match="claims"):
        read_gguf_metadata(path)


# --- registry --------------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "state" / "models.json")


def test_registry_lists_bundled_models_when_empty(registry: ModelRegistry) -> None:
    assert [e.name for e in registry.entries()] == [e.name for e in bundled_models()]
    assert not registry.path.exists()


def test_registry_add_verifies_reads_context_and_persists(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf", context_length=4096)
    entry = registry.add(name="tiny", path=model, sha256=sha(model).upper(), licence="MIT")
    assert entry == ModelEntry(
        name="tiny",
        kind="chat",
        path=model.resolve(),
        sha256=sha(model),
        context_length=4096,
        licence="MIT",
        source="registered",
    )
    assert registry.entries()[-1] == entry
    reopened = ModelRegistry(registry.path)
    assert reopened.get("tiny") == entry
    assert [e.name for e in reopened.entries()] == [SMOLLM2_NAME, MINILM_NAME, "tiny"]
    stored = json.loads(registry.path.read_text())
    assert stored["models"][0]["sha256"] == sha(model)
    assert sorted(p.name for p in registry.path.parent.iterdir()) == [
        "models.json",
        "models.json.lock",
    ]


def test_registry_explicit_context_length_wins(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf", context_length=4096)
    entry = registry.add(name="tiny", path=model, sha256=sha(model), context_length=2048)
    assert entry.context_length == 2048


def test_registry_refuses_hash_mismatch_and_stores_nothing(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ModelVerificationError) as info:
        registry.add(name="tiny", path=model, sha256=wrong)
    assert wrong in str(info.value)
    assert sha(model) in str(info.value)
    assert not registry.path.exists()
    with pytest.raises(ModelError, match="tiny"):
        registry.get("tiny")


def test_registry_refuses_duplicate_names(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    registry.add(name="tiny", path=model, sha256=sha(model))
    with pytest.raises(ModelError, match="already exists"):
        registry.add(name="tiny", path=model, sha256=sha(model))
    with pytest.raises(ModelError, match="already exists"):
        registry.add(name=SMOLLM2_NAME, path=model, sha256=sha(model))
    assert [e.name for e in registry.entries()].count("tiny") == 1


@pytest.mark.parametrize("name", ["", "has space", "../escape", "-dash-first", "x" * 65])
def test_registry_refuses_bad_names(registry: ModelRegistry, tmp_path: Path, name: str) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(ModelError, match="Invalid model name"):
        registry.add(name=name, path=model, sha256=sha(model))


def test_registry_refuses_malformed_hash(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(ModelError, match="not a sha256"):
        registry.add(name="tiny", path=model, sha256="abc123")


def test_registry_refuses_missing_file(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ModelVerificationError, match="not a file"):
        registry.add(name="tiny", path=tmp_path / "nope.gguf", sha256="a" * 64)


def test_registry_refuses_non_gguf_even_with_matching_hash(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ModelError, match="GGUF"):
        registry.add(name="notes", path=path, sha256=sha(path))
    assert not registry.path.exists()


def test_registry_refuses_gguf_without_chat_template(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    path = write_gguf(
        tmp_path / "base.gguf", {"general.architecture": "llama", "llama.context_length": 512}
    )
    with pytest.raises(ModelError, match="chat template"):
        registry.add(name="base", path=path, sha256=sha(path))


def test_registry_remove(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    registry.add(name="tiny", path=model, sha256=sha(model))
    registry.add(name="tiny2", path=model, sha256=sha(model))
    registry.remove("tiny")
    assert [e.name for e in ModelRegistry(registry.path).entries()] == [
        SMOLLM2_NAME,
        MINILM_NAME,
        "tiny2",
    ]
    assert model.exists()  # unregistering leaves the file alone


def test_registry_remove_unknown_or_bundled(registry: ModelRegistry) -> None:
    with pytest.raises(ModelError, match="No registered model named 'ghost'"):
        registry.remove("ghost")
    with pytest.raises(ModelError, match="bundled"):
        registry.remove(SMOLLM2_NAME)


def test_registry_get_unknown_lists_known_names(registry: ModelRegistry) -> None:
    with pytest.raises(ModelError) as info:
        registry.get("ghost")
    assert SMOLLM2_NAME in str(info.value)
    assert MINILM_NAME in str(info.value)
    assert not isinstance(info.value, KeyError)


def test_registry_reports_damaged_file(registry: ModelRegistry) -> None:
    registry.path.parent.mkdir(parents=True)
    registry.path.write_text("{not json")
    with pytest.raises(ModelError, match="damaged"):
        registry.entries()


def test_registry_write_is_atomic_and_keeps_mode(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    registry.add(name="tiny", path=model, sha256=sha(model))
    os.chmod(registry.path, 0o640)
    registry.add(name="tiny2", path=model, sha256=sha(model))
    assert registry.path.stat().st_mode & 0o777 == 0o640
    leftovers = [p.name for p in registry.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_registry_entry_still_verified_at_use(registry: ModelRegistry, tmp_path: Path) -> None:
    model = chat_gguf(tmp_path / "tiny.gguf")
    entry = registry.add(name="tiny", path=model, sha256=sha(model))
    model.write_bytes(model.read_bytes() + b"appended")
    with pytest.raises(ModelVerificationError, match="tiny"):
        verify(registry.get("tiny"))
    assert entry.sha256 == registry.get("tiny").sha256
