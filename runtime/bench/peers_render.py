"""`arborlm bench peers --table FILE --plot FILE`: the README's Performance table (markdown) and
plot (PNG) rendered from the JSON lines alone — no number is typed by hand. `--from-jsonl` re-renders
saved lines. The plot's data preparation is separate from matplotlib (tested without it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The throughput each workload is plotted by (default output_tok_s): for a single stream, the
# decode rate a chat user feels.
PLOT_METRIC = {"latency": "decode_tok_s"}


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The `bench peers` JSON lines of a file (other lines, e.g. logs, are ignored)."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("bench") == "peers":
                lines.append(line)
    if not lines:
        raise ValueError(f"{path}: no `arborlm bench peers` JSON lines")
    return lines


def _results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [ln for ln in lines if ln.get("kind") == "result"]


def _header(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return next((ln for ln in lines if ln.get("kind") == "run"), {})


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _latency_cell(line: dict[str, Any]) -> str:
    if "ttft_p50_ms" in line:
        return f"{_fmt(line['ttft_p50_ms'], 0)} / {_fmt(line['ttft_p99_ms'], 0)}"
    return _fmt(line.get("ttft_ms"), 0)


def _itl_cell(line: dict[str, Any]) -> str:
    if "itl_p50_ms" in line:
        return f"{_fmt(line['itl_p50_ms'], 0)} / {_fmt(line['itl_p99_ms'], 0)}"
    return ""


def _quality_cell(line: dict[str, Any]) -> str:
    if "accuracy" in line:
        return f"accuracy {line['accuracy']:.3f}"
    if "valid_share" in line:
        return f"valid {line['valid_share']:.3f}"
    return ""


def _arborlm_ratio_cell(line: dict[str, Any], arborlm_line: dict[str, Any] | None) -> str:
    """arborlm's output-throughput ratio over this line's system (× faster)."""
    if arborlm_line is None or line is arborlm_line or line.get("skipped") or line.get("failed"):
        return ""
    ratio = (arborlm_line.get("ratios") or {}).get(line["system"], {})
    key = "decode_tok_s" if "decode_tok_s" in ratio else "output_tok_s"
    return f"{ratio[key]:.2f}×" if ratio.get(key) else ""


def table_markdown(lines: list[dict[str, Any]]) -> str:
    header = _header(lines)
    results = _results(lines)
    out = []
    if header:
        out += [f"Measured {header.get('date', '')} on {header.get('machine', '')}; threads per system: "
                f"{header.get('threads', '')}; model `{header.get('model', '')}`, arborlm dtype {header.get('dtype', '')}; "
                f"medians of {header.get('repeats', '')} runs, systems alternating.", "",
                f"Command: `{header.get('command', '')}`", ""]
    weights: dict[str, str] = {}
    for ln in results:
        weights.setdefault(ln["system"], f"{ln.get('weights', '')} | {ln.get('version', '')}")
    out += ["| system | weights | version |", "|---|---|---|"]
    out += [f"| {system} | {w} |" for system, w in weights.items()]
    out += ["", "| workload | system | wall s | output tok/s | TTFT ms (p50 / p99) | ITL ms (p50 / p99) | "
                "decode tok/s | cached share | output quality | arborlm × |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for ln in results:
        by_workload.setdefault(ln["workload"], []).append(ln)
    for workload, rows in by_workload.items():
        ours = next((r for r in rows if r["system"] == "arborlm" and "wall_s" in r), None)
        for r in rows:
            if r.get("skipped") or r.get("failed"):
                why = f"skipped: {r.get('reason', '')}" if r.get("skipped") else f"failed: {r.get('error', '')}"
                out.append(f"| {workload} | {r['system']} | {why} | | | | | | | |")
                continue
            out.append(
                f"| {workload} | {r['system']} | {_fmt(r.get('wall_s'), 2)} | {_fmt(r.get('output_tok_s'))} | "
                f"{_latency_cell(r)} | {_itl_cell(r)} | {_fmt(r.get('decode_tok_s'))} | "
                f"{_fmt(r.get('cached_token_share'), 2)} | {_quality_cell(r)} | {_arborlm_ratio_cell(r, ours)} |")
    return "\n".join(out) + "\n"


def write_table(lines: list[dict[str, Any]], path: str | Path) -> None:
    Path(path).write_text(table_markdown(lines), encoding="utf-8")


@dataclass
class PlotData:
    """Grouped bars: one group per workload, one bar per system (None: not measured there)."""

    workloads: list[str]
    systems: list[str]
    values: dict[str, list[float | None]]  # system -> one value per workload
    metric_names: list[str]  # per workload, the metric plotted
    title: str


def plot_data(lines: list[dict[str, Any]]) -> PlotData:
    results = [ln for ln in _results(lines) if not ln.get("skipped") and not ln.get("failed")]
    workloads = list(dict.fromkeys(ln["workload"] for ln in results))
    systems = list(dict.fromkeys(ln["system"] for ln in results))
    metrics = [PLOT_METRIC.get(w, "output_tok_s") for w in workloads]
    values: dict[str, list[float | None]] = {s: [None] * len(workloads) for s in systems}
    for ln in results:
        i = workloads.index(ln["workload"])
        values[ln["system"]][i] = ln.get(metrics[i])
    header = _header(lines)
    title = (f"arborlm bench peers — {header.get('machine', '')}, threads per system: {header.get('threads', '')}, "
             f"{header.get('date', '')}")
    return PlotData(workloads, systems, values, metrics, title)


def write_plot(lines: list[dict[str, Any]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    data = plot_data(lines)
    width = 0.8 / max(1, len(data.systems))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(data.workloads) + 2), 4.5))
    for k, system in enumerate(data.systems):
        xs = [i + (k - (len(data.systems) - 1) / 2) * width for i in range(len(data.workloads))]
        heights = [v or 0.0 for v in data.values[system]]
        bars = ax.bar(xs, heights, width, label=system)
        for bar, v in zip(bars, data.values[system]):
            if v:
                ax.annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    labels = [w if m == "output_tok_s" else f"{w}\n({m})" for w, m in zip(data.workloads, data.metric_names)]
    ax.set_xticks(range(len(data.workloads)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylabel("output tokens / s (log scale; higher is better)")
    ax.set_title(data.title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
