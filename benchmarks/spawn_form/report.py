"""The results of one scale as a markdown table, judged against the targets."""

from __future__ import annotations

from typing import Any

from measuring import percentile

from .settings import (
    TARGET_EVENT_US,
    TARGET_MEMORY_MB,
    TARGET_RENDER_P95_MS,
    TARGET_SPEEDUP,
)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def spread(samples: list[float]) -> str:
    """p50 / p95 / p99 in ms, three decimals."""
    return " / ".join(f"{percentile(samples, p):.3f}" for p in (50, 95, 99)) + " ms"


Row = tuple[str, str, str, str]


def rows(result: dict[str, Any], judged: bool) -> list[Row]:
    """(measure, value, target, PASS/MISS or '') for one scale; targets only where judged."""
    same = result["same_numbers"], result["same_html"]
    return [
        (
            "pods in cluster / holding accelerators",
            f"{result['pods']:,} / {result['accelerator_pods']:,}",
            "",
            "",
        ),
        *_render_rows(result, judged),
        *_inventory_rows(result, judged),
        (
            "same numbers and same HTML as baseline",
            f"{same[0]} / {same[1]}",
            "True",
            verdict(same[0] and same[1]),
        ),
    ]


def _target(text: str, ok: bool, judged: bool) -> tuple[str, str]:
    """A scale-dependent target: judged only at the scale the targets are set for."""
    return (text, verdict(ok)) if judged else (text + " (judged at large)", "")


def _render_rows(result: dict[str, Any], judged: bool) -> list[Row]:
    """One render of the form, ours against the baseline: API calls, latency, speed-up."""
    ours, base = result["ours_ms"], result["baseline_ms"]
    o95 = percentile(ours, 95)
    b50, b95 = percentile(base, 50), percentile(base, 95)
    r50, r95 = b50 / percentile(ours, 50), b95 / o95
    calls = result["ours_render_calls"] + result["ours_render_requests"]
    return [
        (
            "Kubernetes calls per render, ours",
            f"{calls} in {len(ours):,} renders",
            "0",
            verdict(calls == 0),
        ),
        (
            "Kubernetes calls per render, baseline",
            f"{result['baseline_calls_per_render']:g}",
            "",
            "",
        ),
        (
            "render p50 / p95 / p99, ours",
            spread(ours),
            *_target("p95 <= 5 ms", o95 <= TARGET_RENDER_P95_MS, judged),
        ),
        (
            "render p50 / p95 / p99, ours, CPU time of the thread",
            spread(result["ours_cpu_ms"]),
            "",
            "",
        ),
        ("render p50 / p95 / p99, ours, cluster stopped", spread(result["quiet_ours_ms"]), "", ""),
        ("render p50 / p95, baseline", f"{b50:.1f} / {b95:.1f} ms ({len(base)} renders)", "", ""),
        (
            "speed-up baseline / ours, p50 (p95)",
            f"{r50:,.0f}x ({r95:,.0f}x)",
            *_target(">= 100x", r50 >= TARGET_SPEEDUP and r95 >= TARGET_SPEEDUP, judged),
        ),
    ]


def _inventory_rows(result: dict[str, Any], judged: bool) -> list[Row]:
    """What keeping the inventory costs: its memory and the time to apply one watch event."""
    unchanged, churn = result["event_us_unchanged"], result["event_us_churn"]
    end_to_end = result["event_us_end_to_end"]
    return [
        (
            "inventory memory (peak while relisting)",
            f"{result['memory_mb']:.2f} MB ({result['memory_peak_mb']:.1f} MB)",
            *_target("<= 50 MB", result["memory_mb"] <= TARGET_MEMORY_MB, judged),
        ),
        (
            "watch event, apply only (unchanged / churn)",
            f"{unchanged:.1f} / {churn:.1f} us",
            "<= 50 us",
            verdict(max(unchanged, churn) <= TARGET_EVENT_US),
        ),
        (
            "watch event, JSON parse + apply",
            f"{end_to_end:.1f} us ({result['event_bytes']:,.0f} B/event)",
            "<= 50 us",
            verdict(end_to_end <= TARGET_EVENT_US),
        ),
    ]


def notes(result: dict[str, Any]) -> list[str]:
    """The paragraphs under the table: the pod mix and the baseline's raw lists; the setup."""
    mix = ", ".join(f"{k} {n:,}" for k, n in result["mix"].items())
    stages = ", ".join(f"{k} {v:.3f}" for k, v in result["ours_stages_ms"].items())
    return [
        f"Pods by kind: {mix}. The baseline's two lists fetched as raw JSON without building "
        f"models take {result['baseline_raw_lists_ms']:.0f} ms (median of 3): the rest of its "
        f"{percentile(result['baseline_ms'], 50):.0f} ms is kubernetes_asyncio's model "
        f"deserialisation and the count.",
        "",
        f"Setup: cluster up {result['cluster_up_s']:.0f} s, {result['pods']:,} pods created in "
        f"{result['create_s']:.0f} s ({result['pods'] / result['create_s']:.0f}/s), all Running: "
        f"{result['all_running']} (+{result['running_wait_s']:.0f} s), watcher synced in "
        f"{result['watch_sync_s']:.1f} s with {result['watch_sync_requests']} requests; "
        f"form {result['form_bytes']:,} bytes; 1-minute load average "
        f"{result['load_before_renders']:.1f} before the renders, "
        f"{result['load_after_down']:.1f} after the cluster stopped. "
        f"Median ms per step of one render of ours: {stages}.",
    ]


def markdown(result: dict[str, Any], judged: bool) -> str:
    lines = [
        f"### {result['title']}: topology `{result['topology']}`, {result['pods']:,} pods",
        "",
        "| measure | value | target | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(result, judged)]
    return "\n".join(lines + [""] + notes(result))
