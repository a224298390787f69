"""The result table: one row per figure, with its target and verdict.

The targets are issue 14's (and, for the request count and freshness at a fixed
interval, the earlier ones the benchmark was built with). A verdict is MET or MISSED,
NO DATA when the figure could not be measured (no run in that class), and "-" for rows
given for context only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.bench.common import NAIVE, OTEL

Row = tuple[str, str, str, str, str]  # figure, orchestra-otel, naive, target, verdict

# issue 14's targets
ADAPTIVE_MAX_VS_FLOOR = 0.35
FRESHNESS_SLACK_S = 1.0
BACKFILL_MIN_VS_SDK_CEILING = 1.0
BACKFILL_MIN_VS_NAIVE = 2.0
MAPPING_MAX_VS_JSON = 4.0
IDLE_CPU_MAX_S_PER_H = 8.0
RSS_IDLE_MAX_MB = 80.0
RSS_TRACKED_MAX_MB = 150.0
RSS_BACKFILL_MAX_MB = 120.0


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def _dl(d: dict[str, int] | None) -> str:
    if not d:
        return "-"
    return f"{d['expected']}/{d['received']}/{d['lost']}/{d['duplicated']}"


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "NO DATA"
    return "MET" if ok else "MISSED"


def _at_most(value: float | None, limit: float) -> str:
    return verdict(None if value is None else value <= limit)


def _p50_p99(figures: dict[str, Any], digits: int = 2) -> str:
    return (
        f"{_fmt(figures['p50'], digits)} / {_fmt(figures['p99'], digits)} s "
        f"({figures['count']} runs)"
    )


def _requests_rows(r: dict[str, Any]) -> list[Row]:
    o, n = r[OTEL], r[NAIVE]
    met = o["vs_floor"] <= 0.05 and r["naive_over_otel"] >= 15
    past_first = sum(count for key, count in o["list_runs_by_offset"].items() if key != "0")
    return [
        (
            f"API requests, `once` per interval, {r['sizes']['intervals']} intervals "
            f"(floor {r['floor_requests']})",
            f"{o['requests_total']} ({o['requests_per_new_run']:.2f}/run, "
            f"{o['vs_floor'] * 100:+.1f}% vs floor; {past_first} list calls past page 1, "
            f"{o['requests_by_kind'].get('list_workflows', 0)} discovery)",
            f"{n['requests_total']} ({n['requests_per_new_run']:.1f}/run)",
            "<= floor +5%, >= 15x fewer",
            f"{verdict(met)} ({r['naive_over_otel']:.1f}x fewer)",
        )
    ]


def _freshness_rows(f: dict[str, Any]) -> list[Row]:
    o, n = f[OTEL], f[NAIVE]
    interval = f["sizes"]["poll_interval_s"]
    limit = interval + FRESHNESS_SLACK_S
    return [
        (
            f"freshness p50 / p99, fixed interval {interval:g} s (real clock)",
            f"{_fmt(o['p50_s'], 2)} / {_fmt(o['p99_s'], 2)} s",
            f"{_fmt(n['p50_s'], 2)} / {_fmt(n['p99_s'], 2)} s",
            f"p99 <= {limit:g} s",
            _at_most(o["p99_s"], limit),
        )
    ]


def _adaptive_rows(a: dict[str, Any]) -> list[Row]:
    o = a[OTEL]
    n = a.get(NAIVE)
    scaled, sizes, floor = a["scaled"], a["sizes"], a["floor_requests"]
    interval, in_flight = scaled["interval_s"], scaled["in_flight_interval_s"]
    kinds = o["requests_by_kind"]
    fresh = o["freshness"]
    gaps = o["poll_gaps"]
    return [
        (
            f"requests, {sizes['workflows']} workflows of which {sizes['active']} active, "
            f"{sizes['intervals']} intervals = {a['stands_for_minutes']:g} min at 30 s "
            f"(fixed floor {floor['total']:,})",
            f"{o['requests_total']:,} = {o['vs_floor']:.2f}x floor (history listings: "
            f"{o['list_runs_active']:,} active + {o['list_runs_idle']:,} idle = "
            f"{o['history_vs_floor']:.2f}x; {kinds.get('steps', 0):,} steps, "
            f"{kinds.get('list_workflows', 0)} discovery)",
            "-" if n is None else f"{n['requests_total']:,} = {n['vs_floor']:.2f}x floor",
            f"<= {ADAPTIVE_MAX_VS_FLOOR}x floor",
            _at_most(o["vs_floor"], ADAPTIVE_MAX_VS_FLOOR),
        ),
        (
            f"  poll spacing p50, active / idle workflows (interval {interval:g} s, "
            f"cap {scaled['max_interval_s']:g} s)",
            f"{_fmt(gaps['active']['p50'], 2)} / {_fmt(gaps['idle']['p50'], 2)} s",
            "-",
            f"{interval:g} / {scaled['max_interval_s']:g} s",
            "-",
        ),
        (
            f"freshness p50 / p99, active workflows (interval {interval:g} s)",
            _p50_p99(fresh["latency_all_s"]),
            "-",
            f"p99 <= {interval + FRESHNESS_SLACK_S:g} s",
            _at_most(fresh["latency_all_s"]["p99"], interval + FRESHNESS_SLACK_S),
        ),
        (
            f"  same, runs a poll saw in flight (polled every {in_flight:g} s)",
            _p50_p99(fresh["latency_in_flight_s"]),
            "-",
            f"p99 <= {in_flight + FRESHNESS_SLACK_S:g} s",
            _at_most(fresh["latency_in_flight_s"]["p99"], in_flight + FRESHNESS_SLACK_S),
        ),
    ]


def _first_after_idle_rows(f: dict[str, Any]) -> list[Row]:
    o, n = f[OTEL], f[NAIVE]
    scaled = f["scaled"]
    limit = f["target_p99_s"]
    return [
        (
            f"first run after idle, end -> root span, p50 / p99 (cap "
            f"{scaled['max_interval_s']:g} s, interval {scaled['interval_s']:g} s)",
            _p50_p99(o["latency_after_end_s"]),
            _p50_p99(n["latency_after_end_s"]),
            f"p99 <= {limit:g} s",
            _at_most(o["latency_after_end_s"]["p99"], limit),
        )
    ]


def _backfill_rows(b: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for kind, label in (("fanout", "backfill, fan-out runs"), ("demo", "backfill, demo shapes")):
        if kind not in b:
            continue
        one = b[kind]
        o, n = one[OTEL], one[NAIVE]
        sdk, own = one["sdk_ceiling"], one["ceiling"]
        met = (
            o["vs_sdk_ceiling"] >= BACKFILL_MIN_VS_SDK_CEILING
            and one["otel_over_naive"] >= BACKFILL_MIN_VS_NAIVE
        )
        rows.append(
            (
                f"{label}: {one['sizes']['steps']:,} steps, {one['sizes']['steps_per_run']} "
                f"steps/run (SDK ceiling {sdk['spans_per_s']:,.0f} spans/s; bytes ceiling "
                f"{own['spans_per_s']:,.0f})",
                f"{o['spans_per_s']:,.0f} spans/s = {o['vs_sdk_ceiling']:.2f}x SDK ceiling, "
                f"{one['otel_over_naive']:.2f}x naive ({o['vs_ceiling']:.2f}x bytes ceiling; "
                f"{_fmt(o['vs_sdk_ceiling_cpu'], 2)}x SDK ceiling per CPU s)",
                f"{n['spans_per_s']:,.0f} spans/s = {n['vs_sdk_ceiling']:.2f}x SDK ceiling",
                f">= {BACKFILL_MIN_VS_SDK_CEILING:g}x SDK ceiling, "
                f">= {BACKFILL_MIN_VS_NAIVE:g}x naive"
                + ("" if kind == "fanout" else " (given for fan-out runs)"),
                verdict(met) if kind == "fanout" else "-",
            )
        )
    fanout = b["fanout"]
    peak = fanout[OTEL]["peak_rss_mb"]
    rows.append(
        (
            f"peak RSS during the fan-out backfill ({fanout['sizes']['spans']:,} spans)",
            f"{_fmt(peak)} MB",
            f"{_fmt(fanout[NAIVE]['peak_rss_mb'])} MB",
            f"<= {RSS_BACKFILL_MAX_MB:g} MB",
            _at_most(peak, RSS_BACKFILL_MAX_MB),
        )
    )
    return rows


def _mapping_rows(m: dict[str, Any]) -> list[Row]:
    o, n = m[OTEL], m[NAIVE]
    ratio = o["ratio_map_encode_vs_json"]
    return [
        (
            "mapping + OTLP encoding per step vs json.loads (CPU)",
            f"{ratio:.2f}x ({o['map_encode_steps_per_s']:,.0f} steps/s); "
            f"whole path {o['ratio_pipeline_vs_json']:.1f}x",
            f"{n['ratio_spans_encode_vs_json']:.2f}x "
            f"({n['spans_encode_steps_per_s']:,.0f} steps/s)",
            f"<= {MAPPING_MAX_VS_JSON:g}x",
            _at_most(ratio, MAPPING_MAX_VS_JSON),
        )
    ]


def _idle_cpu_row(mi: dict[str, Any], listing: str, mode: str) -> Row:
    sizes = mi["sizes"]
    o, n = mi[OTEL], mi[NAIVE]
    key = f"idle_{listing}" + ("_fixed" if mode == "fixed" else "")
    measured = o[key]
    what = "empty listings" if listing == "empty" else f"{sizes['idle_history_runs']} old runs each"
    back_off = "back-off on (default)" if mode == "adaptive" else "back-off off (MAX = interval)"
    per_hour = measured["cpu_s_per_hour_at_30s"]
    return (
        f"idle CPU, {sizes['idle_workflows']} workflows, 30 s, {what}, {back_off}",
        f"{per_hour:.1f} s/h ({measured['requests_per_hour_at_30s']:,.0f} requests/h)",
        f"{n[f'idle_{listing}']['cpu_s_per_hour_at_30s']:.1f} s/h",
        f"<= {IDLE_CPU_MAX_S_PER_H:g} s/h",
        _at_most(per_hour, IDLE_CPU_MAX_S_PER_H),
    )


def _memory_rows(mi: dict[str, Any]) -> list[Row]:
    o, n = mi[OTEL], mi[NAIVE]
    idle_rss = o["idle_empty"]["mem"]["rss_mb"]
    tracked = o["tracked"]["mem"]
    rows: list[Row] = [
        (
            "RSS idle (after polls, no runs)",
            f"{idle_rss:.1f} MB",
            f"{n['idle_empty']['mem']['rss_mb']:.1f} MB",
            f"<= {RSS_IDLE_MAX_MB:g} MB",
            _at_most(idle_rss, RSS_IDLE_MAX_MB),
        ),
        (
            f"RSS with {mi['sizes']['runs_tracked']:,} runs tracked (peak)",
            f"{tracked['rss_mb']:.1f} MB ({tracked['hwm_mb']:.1f})",
            f"{n['tracked']['mem']['rss_mb']:.1f} MB ({n['tracked']['mem']['hwm_mb']:.1f})",
            f"<= {RSS_TRACKED_MAX_MB:g} MB",
            _at_most(tracked["rss_mb"], RSS_TRACKED_MAX_MB),
        ),
    ]
    for listing in ("empty", "history"):
        for mode in ("adaptive", "fixed"):
            rows.append(_idle_cpu_row(mi, listing, mode))
    return rows


def _deliveries(s: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(scenario, orchestra-otel's delivery, the baseline's) wherever spans were counted."""
    found: list[tuple[str, Any, Any]] = []
    for name in ("requests", "freshness", "adaptive", "first_after_idle", "mapping"):
        if name in s:
            naive = s[name].get(NAIVE)
            found.append((name, s[name][OTEL]["delivery"], naive and naive["delivery"]))
    if "backfill" in s:
        for kind, b in s["backfill"].items():
            found.append((f"backfill-{kind}", b[OTEL]["delivery"], b[NAIVE]["delivery"]))
    if "memory_idle" in s:
        mi = s["memory_idle"]
        found.append(("memory", mi[OTEL]["tracked"]["delivery"], mi[NAIVE]["tracked"]["delivery"]))
    return found


def _correctness_rows(s: dict[str, Any]) -> list[Row]:
    found = _deliveries(s)
    if not found:
        return []
    clean = all(o_d["lost"] == 0 and o_d["duplicated"] == 0 for _, o_d, _ in found)
    return [
        (
            "lost / duplicated spans (expected/received/lost/dup)",
            "; ".join(f"{name} {_dl(o_d)}" for name, o_d, _ in found),
            "; ".join(f"{name} {_dl(n_d)}" for name, _, n_d in found),
            "0 lost, 0 dup, every scenario",
            verdict(clean),
        )
    ]


_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], list[Row]]], ...] = (
    ("requests", _requests_rows),
    ("freshness", _freshness_rows),
    ("adaptive", _adaptive_rows),
    ("first_after_idle", _first_after_idle_rows),
    ("backfill", _backfill_rows),
    ("mapping", _mapping_rows),
    ("memory_idle", _memory_rows),
)


def table(results: dict[str, Any]) -> list[Row]:
    """(figure, orchestra-otel, naive, target, verdict) rows of the scenarios run."""
    s = results["scenarios"]
    rows: list[Row] = []
    for name, make in _ROWS:
        if name in s:
            rows.extend(make(s[name]))
    return rows + _correctness_rows(s)


def notes(results: dict[str, Any]) -> list[str]:
    """What a reader of the table must know: the scaled clock, quick sizes."""
    s = results["scenarios"]
    found = []
    scaled = next(
        (s[name]["scaled"] for name in ("adaptive", "first_after_idle") if name in s), None
    )
    if scaled is None and "memory_idle" in s:
        scaled = s["memory_idle"]["sizes"]["scaled"]
    if scaled is not None:
        found.append(
            f"adaptive, first run after idle and idle CPU ran on a scaled clock: every "
            f"schedule duration divided by {scaled['scale']:g} (interval "
            f"{scaled['interval_s']:g} s for 30 s, back-off cap {scaled['max_interval_s']:g} s "
            f"and active window {scaled['active_window_s']:g} s for 300 s, discovery "
            f"{scaled['discovery_interval_s']:g} s for 300 s). Their latencies are in "
            f"scaled seconds, their targets too (+{FRESHNESS_SLACK_S:g} s of export slack "
            f"unscaled); idle CPU is given per real hour at 30 s."
        )
    if results.get("quick"):
        found.append("--quick sizes: a smoke check; the verdicts mean nothing.")
    return found


def render(rows: list[Row]) -> str:
    header = ("figure", "orchestra-otel", "naive baseline", "target", "verdict")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
