"""Overhead of encryption at rest on ingestion and on a question: real crypto vs none.

    python bench/crypto.py [--pdfs 4] [--pages-per-pdf 8] [--questions 40] [--fake-embedder]

Two fresh instances run the same work: one with the appliance's envelope encryption
(AES-256-GCM, per-document data keys in the key store, HMAC for duplicates), one with
``NullCrypto``, a pass-through subclass that exists only here (no key store, no AES, a plain
sha256 for duplicates). Each ingests the same corpus through ``IngestionWorker`` (parser
inline, so parse time is not a child-process start-up lottery) and answers the same
questions through ``chat.pipeline.answer`` (real retrieval, decrypt of the hits, encrypted
storage of both turns; the generator is a fake that answers at once, so the model's time
does not hide the crypto's). The real-crypto run also times every call into ``Crypto``
directly. Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.core.crypto import Crypto  # noqa: E402

QUESTIONS = (
    "How do employees book flights?",
    "What does the quarterly report say about revenue growth?",
    "Which budget covers hardware?",
    "What is the policy for remote work travel expenses?",
    "How is customer support staffed?",
)


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class NullCrypto(Crypto):
    """No encryption at all: the baseline. Benchmark only; never used by the appliance."""

    def create_data_key(self, kind: str, owner_id: str) -> bytes:
        """No key store."""
        return bytes(32)

    def data_key(self, kind: str, owner_id: str) -> bytes:
        """No key store."""
        return bytes(32)

    def delete_data_key(self, kind: str, owner_id: str) -> None:
        """No key store."""

    def encrypt(self, kind: str, owner_id: str, place: str, plaintext: bytes) -> bytes:
        """Pass through."""
        return plaintext

    def decrypt(self, kind: str, owner_id: str, place: str, blob: bytes) -> bytes:
        """Pass through."""
        return blob

    def mac(self, purpose: str, data: bytes) -> str:
        """A plain hash, what duplicate detection would use without a key."""
        return hashlib.sha256(purpose.encode() + b"\x00" + data).hexdigest()

    def mac_file(self, purpose: str, path: Path) -> str:
        """A plain hash of the file."""
        h = hashlib.sha256(purpose.encode() + b"\x00")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()


class TimedCrypto(Crypto):
    """The real crypto, with the time spent in each public call added up."""

    def __init__(self, inner: Crypto) -> None:
        super().__init__(inner.keyring, inner.keystore_dir, inner.key_file)
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] += time.perf_counter() - t
            self.calls[name] += 1

    def create_data_key(self, kind: str, owner_id: str) -> bytes:
        """Timed."""
        return bytes(
            self._timed(
                "create_data_key", lambda: super(TimedCrypto, self).create_data_key(kind, owner_id)
            )
        )

    def encrypt(self, kind: str, owner_id: str, place: str, plaintext: bytes) -> bytes:
        """Timed."""
        return bytes(
            self._timed(
                "encrypt",
                lambda: super(TimedCrypto, self).encrypt(kind, owner_id, place, plaintext),
            )
        )

    def decrypt(self, kind: str, owner_id: str, place: str, blob: bytes) -> bytes:
        """Timed."""
        return bytes(
            self._timed(
                "decrypt", lambda: super(TimedCrypto, self).decrypt(kind, owner_id, place, blob)
            )
        )

    def mac_file(self, purpose: str, path: Path) -> str:
        """Timed."""
        return str(
            self._timed("mac_file", lambda: super(TimedCrypto, self).mac_file(purpose, path))
        )


def _snapshot(crypto: Crypto) -> dict[str, float]:
    """Milliseconds spent so far in each timed Crypto call (empty for NullCrypto)."""
    if not isinstance(crypto, TimedCrypto):
        return {}
    return {k: v * 1000 for k, v in crypto.seconds.items()}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest ingestion of a variant's runs, with its fastest median question."""
    best = dict(min(runs, key=lambda r: float(r["ingest_s"]) + float(r["submit_s"])))
    best["question_ms_median"] = min(r["question_ms_median"] for r in runs)
    best["runs"] = len(runs)
    return best


def build_corpus(root: Path, pdfs: int, pages_per_pdf: int) -> list[Path]:
    """Text PDFs of filler prose plus a DOCX and a Markdown file, deterministic."""
    from tests.fixtures.documents import filler_pages, make_docx, make_markdown, make_pdf

    def distinct(pages: list[tuple[str, Sequence[str]]], n: int) -> list[tuple[str, Sequence[str]]]:
        return [(f"{h} (file {n})", [*p, f"This is file number {n}."]) for h, p in pages]

    files = [
        make_pdf(
            root / f"report-{i}.pdf", distinct(filler_pages(pages_per_pdf), i), title=f"Report {i}"
        )
        for i in range(pdfs)
    ]
    files.append(make_docx(root / "handbook.docx", distinct(filler_pages(4), 101)))
    files.append(make_markdown(root / "notes.md", distinct(filler_pages(4), 102)))
    return files


def run(
    variant: str, root: Path, files: list[Path], embedder: Any, questions: int
) -> dict[str, Any]:
    """Ingest the corpus and ask the questions on a fresh instance; return the timings."""
    from appliance.auth import service as users
    from appliance.auth.bootstrap import init
    from appliance.chat import pipeline
    from appliance.core.runtime import open_runtime
    from appliance.documents import service as docs
    from appliance.documents.ingestion import IngestionWorker, Parser
    from models.fakes import FakeGenerator
    from tests.fixtures.app import make_settings

    settings = make_settings(root / "instance")
    init(settings)
    rt = open_runtime(settings, embedder=embedder, generator=FakeGenerator("See [1]."))
    real = rt.crypto
    rt.crypto = (
        TimedCrypto(real) if variant == "real" else NullCrypto(real.keyring, real.keystore_dir)
    )
    worker = IngestionWorker(
        rt, parser=Parser(max_bytes=settings.max_upload_bytes, ocr=False, isolated=False)
    )
    try:
        t = time.perf_counter()
        with rt.sessions() as s:
            owner = users.first_admin(s)
            assert owner is not None
            owner_id = owner.id
            for f in files:
                docs.submit_file(
                    session=s,
                    crypto=rt.crypto,
                    blobs=rt.blobs,
                    path=f,
                    filename=f.name,
                    owner=owner,
                    grants=["everyone"],
                    classification="internal",
                    max_bytes=settings.max_upload_bytes,
                    actor="bench",
                )
            s.commit()
        submit_s = time.perf_counter() - t
        t = time.perf_counter()
        worker.run_until_idle()
        ingest_s = time.perf_counter() - t
        with rt.sessions() as s:
            from sqlalchemy import func, select

            from appliance.documents.tables import Chunk, Document

            chunks = s.execute(select(func.count()).select_from(Chunk)).scalar_one()
            pages = s.execute(select(func.sum(Document.pages))).scalar_one()
            states = set(s.execute(select(Document.state)).scalars())
        assert states == {"indexed"}, states
        ingest_crypto = _snapshot(rt.crypto)
        log(f"{variant}: {len(files)} files, {pages} pages, {chunks} chunks in {ingest_s:.1f}s")

        rt.settings.chat.min_score = 0.0
        latencies = []
        conversation = None
        for i in range(questions + 3):
            t = time.perf_counter()
            for event in pipeline.answer(
                rt=rt,
                scheduler=rt.scheduler,
                user_id=owner_id,
                question=QUESTIONS[i % len(QUESTIONS)],
                conversation_id=conversation,
            ):
                if event.kind == "conversation":
                    conversation = event.data["id"]
            if i >= 3:  # warm-up: first embeddings, first queries
                latencies.append((time.perf_counter() - t) * 1000)
            if i % 10 == 9:
                conversation = None  # a few conversations, bounded history
        latencies.sort()
        result: dict[str, Any] = {
            "files": len(files),
            "pages": pages,
            "chunks": chunks,
            "submit_s": round(submit_s, 3),
            "ingest_s": round(ingest_s, 2),
            "question_ms_median": round(statistics.median(latencies), 2),
            "question_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        }
        if isinstance(rt.crypto, TimedCrypto):
            total = _snapshot(rt.crypto)
            asked = questions + 3
            result["ingest_crypto_ms"] = {k: round(v, 2) for k, v in ingest_crypto.items()}
            result["question_crypto_ms_each"] = {
                k: round((v - ingest_crypto.get(k, 0.0)) / asked, 3) for k, v in total.items()
            }
            result["crypto_calls"] = dict(rt.crypto.calls)
        return result
    finally:
        worker.close()
        rt.close()


def main() -> None:
    """Run both variants and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=4, help="number of text PDFs")
    parser.add_argument("--pages-per-pdf", type=int, default=8, help="pages in each PDF")
    parser.add_argument("--questions", type=int, default=40, help="questions timed per variant")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        choices=(1, 2),
        help="1: null, real; 2: null, real, real, null",
    )
    parser.add_argument(
        "--fake-embedder", action="store_true", help="bag-of-words fake instead of MiniLM"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        corpus.mkdir()
        files = build_corpus(corpus, args.pdfs, args.pages_per_pdf)
        if args.fake_embedder:
            from models.fakes import FakeEmbedder

            embedder: Any = FakeEmbedder()
        else:
            from models.embedder import SentenceTransformerEmbedder
            from models.manifest import MINILM_NAME, bundled_models

            entry = next(e for e in bundled_models() if e.name == MINILM_NAME)
            embedder = SentenceTransformerEmbedder(entry, device="cpu")
            embedder.embed(["warm up"])
        # Warm-up ingestion: imports and first-parse costs land on neither variant.
        run("warmup", root / "warmup", files[-1:], embedder, 1)
        # A B B A: drift (page cache, CPU clock, allocator) falls on both variants alike;
        # each variant keeps its faster run.
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for n, variant in enumerate(("null", "real", "real", "null")[: 2 * args.rounds]):
            runs[variant].append(run(variant, root / str(n), files, embedder, args.questions))
        results = {variant: _best(found) for variant, found in runs.items()}

    real, null = results["real"], results["null"]
    crypto_ingest_ms = sum(real["ingest_crypto_ms"].values())
    crypto_question_ms = sum(real["question_crypto_ms_each"].values())
    print(
        json.dumps(
            {
                "embedder": "fake" if args.fake_embedder else "all-minilm-l6-v2",
                "real": real,
                "null": null,
                "ingest_overhead_s": round(
                    real["ingest_s"] + real["submit_s"] - null["ingest_s"] - null["submit_s"], 2
                ),
                "ingest_overhead_pct": round(
                    100
                    * (
                        (real["ingest_s"] + real["submit_s"])
                        / (null["ingest_s"] + null["submit_s"])
                        - 1
                    ),
                    1,
                ),
                "ingest_time_in_crypto_ms": round(crypto_ingest_ms, 1),
                "ingest_time_in_crypto_pct": round(
                    100 * crypto_ingest_ms / 1000 / (real["ingest_s"] + real["submit_s"]), 2
                ),
                "question_time_in_crypto_ms": round(crypto_question_ms, 3),
                "question_overhead_ms_median": round(
                    real["question_ms_median"] - null["question_ms_median"], 2
                ),
                "question_overhead_pct_median": round(
                    100 * (real["question_ms_median"] / null["question_ms_median"] - 1), 1
                ),
                "note": "overhead_* are wall-time deltas between the two runs (they include run "
                "to run noise); time_in_crypto_* is measured inside the Crypto calls of the real "
                "run: create_data_key, encrypt, decrypt, mac_file",
            }
        )
    )


if __name__ == "__main__":
    main()
