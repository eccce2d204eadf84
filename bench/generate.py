"""Generation through the appliance versus raw llama-cpp-python, and under concurrent askers.

1. The same question is answered through the appliance (`chat.pipeline.answer`: retrieval,
   DB re-check, decryption, prompt, fair queue, citation filter, persistence, audit) and,
   with the very prompt the appliance built, through raw llama-cpp-python on the same
   model file with the same settings. Time to first token and tokens/s for both, and the
   overhead. Greedy decoding (temperature 0), fixed max_tokens.
2. N users ask at once (default 8): queue wait, total time, errors.
Prints one JSON object. Usage: python bench/generate.py [--runs R] [--askers N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUESTION = "How many weeks of parental leave do parents get, and can it be split?"
MAX_TOKENS = 64


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def main() -> None:
    """Run and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--askers", type=int, default=8, help="concurrent users")
    args = parser.parse_args()

    from appliance.auth import service as users
    from appliance.auth.bootstrap import init
    from appliance.chat import pipeline
    from appliance.core.runtime import open_runtime
    from models.generator import LlamaCppGenerator
    from models.manifest import SMOLLM2_NAME, bundled_models
    from models.protocols import ChatMessage
    from tests.fixtures.app import add_user, inline_worker, make_settings, submit
    from tests.fixtures.documents import make_pdf

    entry = next(e for e in bundled_models() if e.name == SMOLLM2_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = make_settings(root / "instance")
        init(settings)
        rt = open_runtime(settings)
        rt.settings.chat.temperature = 0.0
        rt.settings.chat.answer_max_tokens = MAX_TOKENS
        pdf = make_pdf(
            root / "handbook.pdf",
            [
                ("Company Overview", ["The company designs irrigation pumps for vineyards."]),
                (
                    "Parental Leave",
                    [
                        "Parents receive twenty weeks of paid parental leave.",
                        "Leave can be split into two blocks within the first year.",
                    ],
                ),
            ],
        )
        submit(rt, pdf, grants=("everyone",))
        inline_worker(rt).run_until_idle()
        generator = rt.generator()
        assert isinstance(generator, LlamaCppGenerator)
        captured: list[list[ChatMessage]] = []
        stream_called: list[float] = []
        original = generator.stream

        def capture(messages: Any, **kw: Any) -> Any:
            captured.append(list(messages))
            stream_called.append(time.perf_counter())
            return original(messages, **kw)

        generator.stream = capture  # type: ignore[method-assign]
        with rt.sessions() as s:
            admin_id = users.get_user_by_name(s, "admin").id

        def through_appliance() -> tuple[float, float, int, float]:
            # Like raw below, no KV-cache reuse from the previous identical prompt.
            generator._llm.reset()
            t0 = time.perf_counter()
            first, count = None, 0
            for event in pipeline.answer(
                rt=rt, scheduler=rt.scheduler, user_id=admin_id, question=QUESTION
            ):
                if event.kind == "token":
                    count += 1
                    first = first or time.perf_counter()
            end = time.perf_counter()
            assert first is not None
            before_model = stream_called[-1] - t0
            return (first - t0) * 1000, count / (end - first), count, before_model * 1000

        messages: list[dict[str, str]] = []
        # Raw llama-cpp-python runs on the very Llama object the appliance loaded (same
        # weights mapping, context and threads), so the comparison isolates our code path.
        # The two are interleaved, run by run, so that load from other processes on the
        # machine falls on both alike.
        raw: Any = generator._llm

        def through_raw() -> tuple[float, float, int]:
            raw.reset()  # no reuse of the previous identical prompt's KV cache
            t0 = time.perf_counter()
            first, count = None, 0
            for chunk in raw.create_chat_completion(
                messages=messages,
                max_tokens=MAX_TOKENS,
                temperature=0.0,
                stream=True,
            ):
                if chunk["choices"][0]["delta"].get("content"):
                    count += 1
                    first = first or time.perf_counter()
            end = time.perf_counter()
            assert first is not None
            return (first - t0) * 1000, count / (end - first), count

        through_appliance()  # warm-up (model load, caches)
        messages = [{"role": m.role, "content": m.content} for m in captured[-1]]
        through_raw()
        app_runs: list[tuple[float, float, int, float]] = []
        raw_runs: list[tuple[float, float, int]] = []
        for _ in range(args.runs):
            app_runs.append(through_appliance())
            raw_runs.append(through_raw())
        assert all(
            [m.role, m.content] == [c["role"], c["content"]]
            for m, c in zip(captured[-1], messages, strict=True)
        ), "the appliance built a different prompt between runs"

        # Concurrent askers, each a different user.
        ids = [add_user(rt, f"asker{i}") for i in range(args.askers)]
        results: list[dict[str, Any]] = []
        lock = threading.Lock()

        def ask(uid: str) -> None:
            t0 = time.perf_counter()
            positions, error = [], None
            try:
                for event in pipeline.answer(
                    rt=rt, scheduler=rt.scheduler, user_id=uid, question=QUESTION
                ):
                    if event.kind == "queue":
                        positions.append(event.data["position"])
                    if event.kind == "done":
                        queue_ms = event.data["timings"]["queue_ms"]
            except Exception as exc:  # counted, reported
                error, queue_ms = repr(exc), None
            with lock:
                results.append(
                    {
                        "total_ms": (time.perf_counter() - t0) * 1000,
                        "queue_ms": queue_ms,
                        "max_position": max(positions, default=0),
                        "error": error,
                    }
                )

        threads = [threading.Thread(target=ask, args=(u,)) for u in ids]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rt.close()

    app_ttft = _median([r[0] for r in app_runs])
    before_model = _median([r[3] for r in app_runs])
    app_model_ttft = _median([r[0] - r[3] for r in app_runs])
    raw_ttft = _median([r[0] for r in raw_runs])
    app_tps = _median([r[1] for r in app_runs])
    raw_tps = _median([r[1] for r in raw_runs])
    ok = [r for r in results if r["error"] is None]
    print(
        json.dumps(
            {
                "model": entry.name,
                "n_threads": generator.n_threads,
                "n_threads_batch": generator.n_threads_batch,
                "max_tokens": MAX_TOKENS,
                "prompt_tokens": generator.count_chat_tokens(captured[-1]),
                "appliance_ttft_ms": app_ttft,
                "raw_ttft_ms": raw_ttft,
                "appliance_before_model_ms": before_model,
                "appliance_model_ttft_ms": app_model_ttft,
                "ttft_overhead_pct": round((app_ttft - raw_ttft) / raw_ttft * 100, 1),
                # Each appliance run against the raw run right after it: robust to load drift.
                "ttft_overhead_pct_paired_median": _median(
                    [(a[0] - r[0]) / r[0] * 100 for a, r in zip(app_runs, raw_runs, strict=True)]
                ),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "model_path_ttft_overhead_pct": round(
                    (app_model_ttft - raw_ttft) / raw_ttft * 100, 1
                ),
                "appliance_tokens_per_s": app_tps,
                "raw_tokens_per_s": raw_tps,
                "tps_overhead_pct": round((raw_tps - app_tps) / raw_tps * 100, 1),
                "appliance_pieces": app_runs[-1][2],
                "raw_pieces": raw_runs[-1][2],
                "concurrent_askers": args.askers,
                "concurrent_errors": len(results) - len(ok),
                "concurrent_wall_s": round(wall, 1),
                "concurrent_queue_ms_max": round(max(r["queue_ms"] or 0 for r in ok), 1),
                "concurrent_queue_ms_median": _median([r["queue_ms"] or 0 for r in ok]),
                "concurrent_max_position": max(r["max_position"] for r in results),
                "note": "appliance TTFT includes question embedding, ACL search, DB re-check, "
                "decryption and prompt building; raw starts from the finished prompt",
            }
        )
    )


if __name__ == "__main__":
    main()
