#!/usr/bin/python3
"""What serialising the requests of each connection costs the export node.

Runs fio's nbd engine against nbdkit-dst-plugin.so in its two thread models
(nbdkit's parallel one with parallel-requests=true, and the default of one
thread per connection), straight and through `dst-aggregator serve --raw`,
alternating the two round by round so that both see the same machine, and
prints a Markdown table of median IOPS / MiB/s with the ratio serialised /
parallel.

    bench/thread_model.py --plugin PLUGIN.so --aggregator AGG \
        [--rounds 3] [--runtime 5] [--ramp 1] [--size 1G] [--disk-dir /var/tmp]

Members: a file on tmpfs (page cache: the CPU cost of each request), and with
--disk-dir a file there opened with direct=true (O_DIRECT: the device's
latency, where requests in parallel matter). Standard library only.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOADS = {
    "randread-4k-qd32": ["--rw=randread", "--bs=4k", "--iodepth=32"],
    "randwrite-4k-qd32": ["--rw=randwrite", "--bs=4k", "--iodepth=32"],
    "seqread-1m-qd8": ["--rw=read", "--bs=1M", "--iodepth=8"],
    "randrw70-4k-qd32x4": ["--rw=randrw", "--rwmixread=70", "--bs=4k", "--iodepth=32",
                           "--numjobs=4"],
}
DISK_WORKLOADS = ["randread-4k-qd32", "randrw70-4k-qd32x4"]


def wait_for_socket(path, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            r = subprocess.run(["nbdinfo", "--size", f"nbd+unix:///?socket={path}"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                return
            r = subprocess.run(["nbdinfo", "--size", f"nbd+unix:///vol0?socket={path}"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                return
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        time.sleep(0.1)
    sys.exit(f"{path}: server not ready")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fio(uri, workload, runtime, ramp, tmp):
    out = os.path.join(tmp, "fio.json")
    argv = (["fio", f"--name={workload}", "--ioengine=nbd", f"--uri={uri}"] +
            WORKLOADS[workload] +
            ["--group_reporting", "--time_based", f"--runtime={runtime}",
             f"--ramp_time={ramp}", "--norandommap", "--output-format=json",
             f"--output={out}"])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=runtime + ramp + 120)
    if r.returncode:
        sys.exit(f"fio failed: {r.stderr[-2000:]}")
    with open(out) as f:
        job = json.load(f)["jobs"][0]
    iops = job["read"]["iops"] + job["write"]["iops"]
    mibs = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 2**20
    return iops, mibs


class Node:
    """nbdkit with the plugin over one file, and optionally an aggregator."""

    def __init__(self, tmp, plugin, file, size, direct, aggregator, connections, extra=()):
        self.sock = os.path.join(tmp, "node.sock")
        args = ["nbdkit", "-f", "--exit-with-parent", "-U", self.sock, plugin,
                f"file={file}", f"size={size}", *extra]
        if direct:
            args.append("direct=true")
        self.nbdkit = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        wait_for_socket(self.sock, self.nbdkit)
        self.uri = f"nbd+unix:///?socket={self.sock}"
        self.agg = None
        if aggregator:
            self.agg_sock = os.path.join(tmp, "agg.sock")
            self.agg = subprocess.Popen(
                [aggregator, "serve", "--raw", "--unix", self.agg_sock, "--name", "vol0",
                 "--control", "none", "--connections", str(connections),
                 f"nbd+unix:///?socket={self.sock}"],
                stderr=subprocess.DEVNULL)
            wait_for_socket(self.agg_sock, self.agg)
            self.uri = f"nbd+unix:///vol0?socket={self.agg_sock}"

    def close(self):
        if self.agg:
            stop(self.agg)
        stop(self.nbdkit)
        for p in (self.sock, getattr(self, "agg_sock", "")):
            if p and os.path.exists(p):
                os.unlink(p)


def precondition(tmp, plugin, file, size, direct):
    node = Node(tmp, plugin, file, size, direct, None, 0)
    r = subprocess.run(["fio", "--name=pre", "--ioengine=nbd", f"--uri={node.uri}", "--rw=write",
                        "--bs=1M", "--iodepth=8"], capture_output=True, text=True, timeout=900)
    node.close()
    if r.returncode:
        sys.exit(f"precondition failed: {r.stderr[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plugin", required=True, help="nbdkit-dst-plugin.so")
    ap.add_argument("--aggregator", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--ramp", type=int, default=1)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--disk-dir", help="also measure an O_DIRECT file in this directory")
    ap.add_argument("--disk-connections", default="2,8",
                    help="aggregator connections per member for the O_DIRECT file (default 2,8)")
    ap.add_argument("--no-tmpfs", action="store_true", help="only the O_DIRECT file")
    a = ap.parse_args()

    plugin = os.path.abspath(a.plugin)
    variants = {"parallel": ["parallel-requests=true"], "serialised": []}
    tmp = tempfile.mkdtemp(prefix="dst-tm-", dir="/dev/shm")
    cases = []  # (label, file, direct, aggregator, connections, workloads)
    shm_file = os.path.join(tmp, "m0.img")
    if not a.no_tmpfs:
        for name, agg, conns in (("direct", None, 0), ("agg1 (2 connections)", a.aggregator, 2)):
            cases.append((f"tmpfs, {name}", shm_file, False, agg, conns, list(WORKLOADS)))
    disk_tmp = None
    if a.disk_dir:
        disk_tmp = tempfile.mkdtemp(prefix="dst-tm-", dir=a.disk_dir)
        disk_file = os.path.join(disk_tmp, "m0.img")
        cases.append(("O_DIRECT disk, direct", disk_file, True, None, 0, DISK_WORKLOADS))
        for conns in (int(c) for c in a.disk_connections.split(",")):
            cases.append((f"O_DIRECT disk, agg1 ({conns} connections)", disk_file, True,
                          a.aggregator, conns, DISK_WORKLOADS))
    try:
        if not a.no_tmpfs:
            precondition(tmp, plugin, shm_file, a.size, False)
        if a.disk_dir:
            precondition(tmp, plugin, disk_file, a.size, True)
        results = {}  # (case, workload, variant) -> [(iops, mibs)]
        order = list(variants)
        for rnd in range(a.rounds):
            for variant in (order if rnd % 2 == 0 else order[::-1]):
                for label, file, direct, agg, conns, workloads in cases:
                    node = Node(tmp, plugin, file, a.size, direct, agg, conns, variants[variant])
                    try:
                        for w in workloads:
                            r = fio(node.uri, w, a.runtime, a.ramp, tmp)
                            results.setdefault((label, w, variant), []).append(r)
                            print(f"round {rnd + 1} {variant:10} {label:35} {w:20} "
                                  f"{r[0]:10.0f} IOPS {r[1]:8.1f} MiB/s", file=sys.stderr,
                                  flush=True)
                    finally:
                        node.close()
        print("| member, path | workload | parallel | serialised | serialised ÷ parallel |")
        print("|---|---|---:|---:|---:|")
        for label, _, _, _, _, workloads in cases:
            for w in workloads:
                med = {v: statistics.median(x[0] for x in results[(label, w, v)]) for v in variants}
                unit = "IOPS"
                if w.startswith("seq"):
                    med = {v: statistics.median(x[1] for x in results[(label, w, v)])
                           for v in variants}
                    unit = "MiB/s"
                print(f"| {label} | {w} | {med['parallel']:,.0f} {unit} | "
                      f"{med['serialised']:,.0f} {unit} | "
                      f"{med['serialised'] / med['parallel']:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_tmp:
            shutil.rmtree(disk_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
