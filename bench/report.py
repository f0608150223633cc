"""Results: rows, ratios to raw boto3, the console table, results.md and results.png."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

RAW = "boto3"


@dataclass
class Row:
    workload: str
    size: str
    tool: str
    unit: str
    higher_is_better: bool = True
    variant: str = ""  # which raw boto3 way, for the baseline rows
    value: float | None = None
    error: str | None = None
    requests: int | None = None  # counted by the server, the benchmark's own checks left out
    by_kind: dict[str, int] | None = None  # counted by the client (raw boto3, pys3fs stats)
    notes: list[str] = field(default_factory=list)
    ratio: float | None = None  # > 1 is better than the best raw boto3 way
    baseline: bool = False  # the best raw way, that the ratios are to

    @property
    def label(self) -> str:
        return f"{self.tool} ({self.variant})" if self.variant else self.tool


def compute_ratios(rows: list[Row]) -> None:
    """Ratio of every row to the best raw boto3 row of its workload, oriented > 1 = better."""
    by_workload: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_workload[row.workload].append(row)
    for group in by_workload.values():
        raw = [r for r in group if r.tool == RAW and r.value]
        if not raw:
            continue
        pick = max if group[0].higher_is_better else min
        best = pick(raw, key=lambda r: r.value)
        best.baseline = True
        for row in group:
            if row.value:
                ratio = row.value / best.value
                row.ratio = ratio if row.higher_is_better else 1 / ratio


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def fmt_kinds(kinds: dict[str, int] | None) -> str:
    if not kinds:
        return "-"
    return " ".join(f"{k}:{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v)


def row_text(row: Row) -> str:
    """The value cell: the number, or the error."""
    if row.error:
        return f"error: {row.error}"
    return fmt_value(row.value, row.unit)


def console_table(rows: list[Row]) -> str:
    header = ["workload", "size", "tool", "value", "unit", "vs raw", "requests", "by kind"]
    lines = [header]
    for row in rows:
        lines.append(
            [
                row.workload,
                row.size,
                row.label + (" *" if row.baseline else ""),
                row_text(row),
                row.unit,
                fmt_ratio(row.ratio),
                "-" if row.requests is None else str(row.requests),
                fmt_kinds(row.by_kind),
            ]
        )
    widths = [
        max(len(line[i]) for line in lines if not line[3].startswith("error"))
        for i in range(len(header))
    ]
    out = []
    for i, line in enumerate(lines):
        if line[3].startswith("error"):
            out.append("  ".join(line[:3]) + "  " + line[3])
            continue
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("* the raw boto3 baseline; vs raw > 1 is better than it. requests: counted by")
    out.append("  the server (RGW), the benchmark's own checks left out. by kind: client-side.")
    return "\n".join(out)


def notes_text(rows: list[Row], run_notes: list[str]) -> list[str]:
    lines = list(run_notes)
    for row in rows:
        lines += [f"{row.workload} / {row.label}: {n}" for n in row.notes]
    return lines


# -- results.md ------------------------------------------------------------------------------
def tools_in(rows: list[Row]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        if row.tool not in seen:
            seen.append(row.tool)
    return seen


def side_by_side(rows: list[Row]) -> list[str]:
    tools = tools_in(rows)
    mounts = [t for t in tools if t != RAW]
    lines = [
        "| workload | size | unit | " + " | ".join(tools) + " |",
        "|---|---|---|" + "---:|" * len(tools),
    ]
    for workload in dict.fromkeys(r.workload for r in rows):
        group = [r for r in rows if r.workload == workload]
        cells = []
        raw = [r for r in group if r.tool == RAW]
        best = next((r for r in raw if r.baseline), raw[0] if raw else None)
        if RAW in tools:
            cells.append(row_text(best) if best else "-")
        for tool in mounts:
            row = next((r for r in group if r.tool == tool), None)
            if row is None:
                cells.append("-")
            elif row.error or row.ratio is None:
                cells.append(row_text(row))
            else:
                cells.append(f"{row_text(row)} ({fmt_ratio(row.ratio)})")
        lines.append(
            f"| {workload} | {group[0].size} | {group[0].unit} | " + " | ".join(cells) + " |"
        )
    return lines


def requests_table(rows: list[Row]) -> list[str]:
    tools = tools_in(rows)
    lines = ["| workload | " + " | ".join(tools) + " |", "|---|" + "---:|" * len(tools)]
    for workload in dict.fromkeys(r.workload for r in rows if r.unit != "MiB"):
        group = [r for r in rows if r.workload == workload]
        cells = []
        for tool in tools:
            row = next((r for r in group if r.tool == tool and (r.baseline or r.tool != RAW)), None)
            cells.append("-" if row is None or row.requests is None else str(row.requests))
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(path: Path, rows: list[Row], meta: dict, chart: str | None) -> None:
    md = [f"# pys3fs benchmark{' (quick run)' if meta.get('quick') else ''}", ""]
    md += [
        f"{meta['date']}, `{meta['command']}`, {meta['elapsed']}. One run, one Ceph RGW "
        "server on 127.0.0.1, every tool in turn; each mount is fresh. Values in brackets "
        "are ratios to the best raw boto3 way: above 1 is better than raw boto3.",
        "",
    ]
    md += side_by_side(rows)
    md += [""]
    if chart:
        md += [f"![ratio to raw boto3 per workload and tool]({chart})", ""]
    md += [
        "## S3 requests per workload",
        "",
        "Counted by the server (RGW's request counter), the benchmark's own setup and "
        "completion checks left out; for boto3 the baseline way.",
        "",
    ]
    md += requests_table(rows)
    md += ["", "## All rows", ""]
    md += [
        "| workload | tool | value | unit | vs raw | requests | by kind (client side) |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for row in rows:
        label = row.label + (" (baseline)" if row.baseline else "")
        md.append(
            f"| {row.workload} | {label} | {row_text(row)} | {row.unit} | "
            f"{fmt_ratio(row.ratio)} | {'-' if row.requests is None else row.requests} | "
            f"{fmt_kinds(row.by_kind)} |"
        )
    md += ["", "## Workloads", ""]
    md += [f"- {line}" for line in meta["workloads"]]
    md += ["", "## Tools and settings", ""]
    md += [f"- {name}: {text}" for name, text in meta["tools"].items()]
    md += ["", "## Machine", ""]
    md += [f"- {name}: {text}" for name, text in meta["machine"].items()]
    notes = notes_text(rows, meta["notes"])
    if notes:
        md += ["", "## Notes", ""]
        md += [f"- {line}" for line in notes]
    path.write_text("\n".join(md) + "\n")


# -- results.png -----------------------------------------------------------------------------
def write_chart(path: Path, rows: list[Row], title: str) -> str | None:
    """Grouped bars: ratio to raw boto3 per workload (x) and tool (colour), log scale.
    Returns None, or why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib missing (pip install -e '.[bench]')"
    tools = [t for t in tools_in(rows) if t != RAW]
    workloads = list(dict.fromkeys(r.workload for r in rows if r.tool == RAW))
    if not tools or not workloads:
        return "no chart: nothing to compare"
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(workloads) + 2), 4.8), dpi=110)
    width = 0.8 / len(tools)
    ratios = [r.ratio for r in rows if r.ratio]
    floor = min([*ratios, 0.5]) / 2
    for i, tool in enumerate(tools):
        xs, heights, labels = [], [], []
        for j, workload in enumerate(workloads):
            row = next((r for r in rows if r.workload == workload and r.tool == tool), None)
            x = j - 0.4 + width * (i + 0.5)
            if row is not None and row.ratio:
                xs.append(x)
                heights.append(row.ratio)
                labels.append(f"{row.ratio:.2f}")
            else:
                ax.text(x, floor * 1.1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        bars = ax.bar(xs, heights, width, label=tool)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="raw boto3 = 1")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor, top=max([*ratios, 1.0]) * 2.5)
    ax.set_xticks(range(len(workloads)), workloads, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("ratio to raw boto3 (higher is better, log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right", ncols=len(tools) + 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
