#!/usr/bin/env python3
"""Plots scripts/bench-scaling.sh's CSV: throughput and p99 against clients,
against ranges, and node RSS against ranges (PNG files for docs/).

Usage: plot-scaling.py SCALING_CSV OUT_DIR
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402


def plain_ticks(ax, xs):
    """Ticks at the measured points, written as plain numbers."""
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def series(data, name, workload, x):
    pts = sorted(
        (int(r[x]), r) for r in data if r["series"] == name and r["workload"] == workload
    )
    return [p[0] for p in pts], [p[1] for p in pts]


def throughput_and_p99(ax_ops, ax_p99, data, name, x, xlabel):
    xs_all = set()
    for workload, style in (("put", "o-"), ("get", "s-")):
        xs, rs = series(data, name, workload, x)
        xs_all.update(xs)
        if not xs:
            continue
        ax_ops.plot(xs, [float(r["ops_per_sec"]) for r in rs], style, label=workload)
        ax_p99.plot(xs, [float(r["p99_ms"]) for r in rs], style, label=workload)
    for ax in (ax_ops, ax_p99):
        ax.set_xscale("log", base=2 if x == "clients" else 10)
        plain_ticks(ax, sorted(xs_all))
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_ops.set_ylabel("ops/s")
    ax_ops.set_ylim(bottom=0)
    ax_p99.set_ylabel("p99 latency (ms)")
    ax_p99.set_yscale("log")


def main():
    path, out = sys.argv[1], sys.argv[2]
    data = rows(path)
    note = "RangeDB release build, 3 nodes on loopback, 2 cores, 10,000 keys, 100-byte values"

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    throughput_and_p99(a, b, data, "clients", "clients", "concurrent clients (one range)")
    a.set_title("Throughput against clients")
    b.set_title("p99 against clients")
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling-clients.png"), dpi=90)

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    throughput_and_p99(a, b, data, "ranges", "ranges", "ranges the keys are spread over (64 clients)")
    a.set_title("Throughput against ranges")
    b.set_title("p99 against ranges")
    xs, rs = series(data, "ranges", "get", "ranges")
    c.plot(xs, [float(r["rss_mib_max"]) for r in rs], "o-", label="largest node")
    c.plot(xs, [float(r["rss_mib_mean"]) for r in rs], "s--", label="mean of the 3 nodes")
    c.set_xscale("log")
    plain_ticks(c, xs)
    c.set_ylim(bottom=0)
    c.set_xlabel("ranges (each node holds a replica of every range)")
    c.set_ylabel("RSS (MiB)")
    c.set_title("Memory per node against ranges")
    c.grid(True, which="both", alpha=0.3)
    c.legend()
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling-ranges.png"), dpi=90)
    print(f"wrote {out}/scaling-clients.png and {out}/scaling-ranges.png")


if __name__ == "__main__":
    main()
