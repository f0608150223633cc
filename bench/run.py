"""``python -m bench [--quick] [--peers] [--write-results]``: run the benchmark.

One Ceph RGW server on 127.0.0.1 for the whole run, one bucket; for each workload, raw
boto3 first, then each tool through a fresh mount of its real command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from . import report
from .report import Row
from .tools import (
    BenchError,
    RssSampler,
    Tool,
    all_tools,
    ceph_rgw,
    drop_page_cache,
    machine_facts,
    mount,
    source_digest,
)
from .workloads import FULL, QUICK, RAW, WORKLOADS, Ctx, Target, Workload

BUCKET = "pys3fs-bench"
HERE = Path(__file__).resolve().parent
STARTED = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Raw boto3 vs pys3fs (and peers) through real mounts on a throw-away "
        "Ceph RGW on 127.0.0.1. Needs root.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--peers", action="store_true", help="also s3fs-fuse and rclone mount")
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="write bench/results.md and results.png (results-quick.* with --quick)",
    )
    parser.add_argument("--only", metavar="W1,W2", help="run only these workloads")
    parser.add_argument("--tools", metavar="T1,T2", help="only these mounted tools")
    parser.add_argument("--tmpdir", help="where the run's local files go (default: $TMPDIR)")
    return parser.parse_args(argv)


def pick(items, names: str | None, what: str, key):
    if not names:
        return list(items)
    wanted = names.split(",")
    unknown = set(wanted) - {key(i) for i in items}
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(sorted(unknown))}")
    return [i for i in items if key(i) in wanted]


def kinds_delta(before: dict | None, after: dict | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    diff = Counter(after) - Counter(before)
    return dict(diff)


def measure(ctx: Ctx, w: Workload, t: Target, fn, row: Row) -> Row:
    """Run one timed measurement into ``row``, with the requests it made."""
    server_before = ctx.server.requests_served()
    probe_before = ctx.probe_counter.total
    raw_before = ctx.raw_counter.snapshot()
    stats_before = t.mounted.stats() if t.mounted else None
    try:
        row.value = fn()
    except (BenchError, OSError, ValueError) as exc:
        row.error = str(exc) or type(exc).__name__
    except Exception as exc:  # boto3/botocore errors: report, go on with the next row
        row.error = f"{type(exc).__name__}: {exc}"[:300]
    row.notes += t.notes
    server_after = ctx.server.requests_served()
    if server_before is not None and server_after is not None:
        row.requests = server_after - server_before - (ctx.probe_counter.total - probe_before)
    if t.is_raw:
        row.by_kind = dict(ctx.raw_counter.snapshot() - raw_before)
    elif t.mounted:
        stats_after = t.mounted.stats()
        row.by_kind = kinds_delta(
            (stats_before or {}).get("requests"), (stats_after or {}).get("requests")
        )
    shown = f"error: {row.error}" if row.error else f"{report.fmt_value(row.value, row.unit)}"
    log(f"{w.name:<18} {row.label:<40} {shown} {'' if row.error else row.unit}")
    return row


def cold(ctx: Ctx, w: Workload) -> None:
    """Drop the page cache before a cold measurement, and say whether that worked."""
    if not w.cold:
        return
    problem = drop_page_cache()
    if problem:
        ctx.note(f"{w.name}: {problem}; cold reads rely on fresh mounts and copies only")
    else:
        ctx.note(f"{w.name}: page cache dropped before each measurement (drop_caches)")


def run_raw(ctx: Ctx, w: Workload) -> list[Row]:
    t = Target(RAW, f"raw/{w.name}/")
    base = Row(w.name, w.size(ctx.scale), RAW, w.unit, w.higher_is_better)
    try:
        w.setup(ctx, t)
        variants = w.raw_variants(ctx, t)
    except Exception as exc:
        base.error = f"setup: {exc}"[:300]
        return [base]
    rows = []
    for label, fn in variants.items():
        row = Row(w.name, base.size, RAW, w.unit, w.higher_is_better, variant=label)
        cold(ctx, w)
        t.notes = []
        rows.append(measure(ctx, w, t, fn, row))
    return rows


def run_mounted(ctx: Ctx, w: Workload, tool: Tool, rss_rows: list[Row]) -> Row:
    """One workload through a fresh mount of ``tool``; the daemon's peak RSS if asked."""
    row = Row(w.name, w.size(ctx.scale), tool.name, w.unit, w.higher_is_better)
    if tool.missing:
        row.error = tool.missing
        return row
    t = Target(tool.name, f"{tool.name}/{w.name}/", acks_early=tool.acks_early)
    tag = f"{tool.name}-{w.name}"
    # Rows of one cache group hand the mount's cache directory on to the next (a remount).
    group = ("cache", tool.name, w.cache_group) if w.cache_group else None
    kept = ctx.inputs.pop(group, None) if group and w.remount else None
    primed = kept is not None
    if group and kept is None:
        kept = ctx.workdir / f"cache-{tag}-kept"
    try:
        w.setup(ctx, t)
        if w.remount and not primed:  # no earlier row left a cache: make one, untimed
            with mount(tool, ctx.server, ctx.bucket, ctx.workdir, f"{tag}-first", kept) as m:
                t.mounted = m
                w.prime(ctx, t)
        cold(ctx, w)
        with mount(tool, ctx.server, ctx.bucket, ctx.workdir, tag, kept) as m:
            t.mounted = m
            sampler = RssSampler(m.pid) if w.sample_rss else None
            with sampler or contextlib.nullcontext():
                measure(ctx, w, t, lambda: w.mounted(ctx, t), row)
            if sampler:
                rss = Row(f"peak RSS: {w.name}", row.size, tool.name, "MiB", False)
                rss.value = sampler.peak_mib
                rss_rows.append(rss)
    except Exception as exc:  # setup, mount or unmount failed
        if row.value is None and row.error is None:
            row.error = f"{type(exc).__name__}: {exc}"[:300]
            log(f"{w.name:<18} {tool.name:<40} error: {row.error}")
        else:
            row.notes.append(f"after the measurement: {type(exc).__name__}: {exc}"[:300])
    finally:
        if kept is not None and not w.remount and row.error is None:
            ctx.inputs[group] = kept  # for the remount row of the group
        elif kept is not None:
            shutil.rmtree(kept, ignore_errors=True)
    return row


def run(args: argparse.Namespace, workdir: Path, rows: list[Row], meta: dict) -> None:
    scale = QUICK if args.quick else FULL
    workloads = pick(WORKLOADS, args.only, "workload", lambda w: w.name)
    tools = pick(all_tools(args.peers), args.tools, "tool", lambda t: t.name)
    for tool in tools:
        tool.ensure_installed()
        meta["tools"][tool.name] = f"{tool.version()}; {tool.settings}"
    log("starting Ceph RGW")
    with ceph_rgw(workdir) as server:
        log(f"Ceph RGW on {server.url}")
        meta["tools"]["server"] = f"{server.version()} (scripts/ceph-rgw.sh, one OSD on bluestore)"
        ctx = Ctx(server, BUCKET, scale, workdir, notes=meta["notes"])
        ctx.probe.create_bucket(Bucket=BUCKET)
        rss_rows: list[Row] = []
        for w in workloads:
            log(f"{w.name}: preparing")
            try:
                w.prepare(ctx)
            except Exception as exc:
                rows.append(Row(w.name, "-", RAW, w.unit, error=f"prepare: {exc}"[:300]))
                continue
            meta["workloads"].append(f"{w.name} ({w.size(scale)}, {w.unit}): {w.describe()}")
            rows.extend(run_raw(ctx, w))
            for tool in tools:
                if tool.workloads is None or w.name in tool.workloads:
                    rows.append(run_mounted(ctx, w, tool, rss_rows))
        rows.extend(rss_rows)


def interrupt(_signum, _frame) -> None:
    """SIGTERM stops the run like Ctrl-C: every mount and the server are cleaned up."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)
    if os.geteuid() != 0:
        print("bench: needs root (FUSE mounts, drop_caches, Ceph)", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    meta: dict = {
        "quick": args.quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command.strip(),
        "machine": machine_facts(),
        "tools": {},
        "workloads": [],
        "notes": [],
    }
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        meta["notes"].append(
            f"the machine was busy at the start (load average {load:.1f} on "
            f"{os.cpu_count()} cores): expect noisy numbers"
        )
    sources = source_digest()
    rows: list[Row] = []
    workdir = Path(tempfile.mkdtemp(prefix="pys3fs-bench-", dir=args.tmpdir))
    status = 0
    try:
        run(args, workdir, rows, meta)
    except KeyboardInterrupt:
        log("interrupted: the server and every mount were stopped")
        status = 130
    except BenchError as exc:
        log(f"failed: {exc}")
        status = 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if source_digest() != sources:
        meta["notes"].append(
            "pys3fs's sources changed during the run: its rows may come from different versions"
        )
    elapsed = time.monotonic() - STARTED
    meta["elapsed"] = f"{elapsed / 60:.1f} min ({mode} run)"
    meta["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if not rows:
        return status or 1
    report.compute_ratios(rows)
    print(report.console_table(rows))
    for line in report.notes_text(rows, meta["notes"]):
        print(f"note: {line}")
    print(f"{mode} run, {elapsed / 60:.1f} min; " + ", ".join(meta["tools"].values()))
    if args.write_results and status == 0:
        stem = "results-quick" if args.quick else "results"
        title = f"pys3fs benchmark, ratio to raw boto3 ({meta['date']}, {mode} run)"
        chart_problem = report.write_chart(HERE / f"{stem}.png", rows, title)
        if chart_problem:
            meta["notes"].append(chart_problem)
        chart = None if chart_problem else f"{stem}.png"
        report.write_markdown(HERE / f"{stem}.md", rows, meta, chart)
        log(f"wrote bench/{stem}.md" + (f" and bench/{chart}" if chart else ""))
    return status
