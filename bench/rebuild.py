#!/usr/bin/python3
"""Rebuild benchmark: a full rebuild of a mirror copy against nbdcopy.

Run it through bench/rebuild.sh; bench/README.md ("Rebuild") describes it.
Standard library only; processes, build and /proc helpers come from
dstbench.py, so every process gets its own group and PR_SET_PDEATHSIG and all
of them are stopped on exit, error, Ctrl-C, SIGTERM and SIGHUP.

Per round:
  1. `serve --discard 1 M0 M1`: slot 1 is rebuilt in full from slot 0 with
     idle clients at the default rates; the time from the job's start line
     (`rebuilding (full: discard`) to its `done` line, the aggregator's
     utime + stime over the same span, and rebuild_bytes.
  2. `nbdcopy M0 COPY`: member 0's export (the same written data, the volume's
     metadata too) to a fresh export of the same size; nbdcopy skips holes
     by block status, so both copy about what was written.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dstbench as db  # noqa: E402

MIB = db.MIB
START_LINE = "rebuilding (full: discard"
DONE_LINE = "rebuilding vol0 slot 1: done ("


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/rebuild.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1G", help="member size (default 1G)")
    p.add_argument("--written", default="256M", help="data written to the volume (default 256M)")
    p.add_argument("--rounds", type=int, default=3, help="rebuild + nbdcopy rounds (default 3)")
    p.add_argument("--rate-max", help="serve --resync-rate-max for the rebuild (default: the "
                   "aggregator's, 200 MiB/s)")
    p.add_argument("--rate-min", help="serve --resync-rate-min for the rebuild (default: the "
                   "aggregator's, 1 MiB/s); equal to --rate-max, the rebuild runs at that rate "
                   "even while clients are busy (what the throttle spares them)")
    p.add_argument("--fio", type=float, default=0, metavar="S",
                   help="also S seconds of fio 4K randread QD8 idle and during a rebuild "
                   "(default 0: not run)")
    p.add_argument("--tmpdir", default="/dev/shm", help="where the member files go")
    p.add_argument("--build-dir", default=os.path.join(db.REPO, "build-bench"))
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--timeout", type=float, default=600, help="bound of each step, seconds")
    a = p.parse_args(argv)
    a.size, a.written = db.parse_size(a.size), db.parse_size(a.written)
    if a.written <= 0 or a.written + 64 * MIB > a.size:
        sys.exit("rebuild.sh: --written must be more than 0 and 64 MiB less than --size")
    return a


class Rebuild:
    def __init__(self, args, build, resdir):
        self.args, self.build, self.resdir = args, build, resdir
        self.agg = build["aggregator"]
        self.procs = db.ProcTable()
        self.tmp = tempfile.mkdtemp(prefix="dst-rebuild.", dir=args.tmpdir)
        self.logdir = os.path.join(resdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.members = {}

    def cleanup(self):
        self.procs.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log(self, name):
        return os.path.join(self.logdir, name + ".log")

    def member(self, name, fresh=False):
        """nbdkit with the dst plugin on a sparse file of --size; its URI."""
        if name in self.members:
            self.procs.stop(self.members.pop(name))
        path = os.path.join(self.tmp, name + ".img")
        if fresh and os.path.exists(path):
            os.unlink(path)
        sock = os.path.join(self.tmp, name + ".sock")
        p = self.procs.start(f"nbdkit[{name}]",
                             ["nbdkit", "--exit-with-parent", "-U", sock, self.build["plugin"],
                              f"file={path}", f"size={self.args.size}", f"name={name}"],
                             self.log("member-" + name))
        uri = f"nbd+unix:///{name}?socket={sock}"
        self.wait_ready(uri, p)
        self.members[name] = p
        return uri

    def wait_ready(self, uri, p, timeout=20.0):
        deadline = time.monotonic() + timeout
        while subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                             timeout=5).returncode != 0:
            if not p.alive() or time.monotonic() > deadline:
                raise db.SetupError(f"{p.name} did not answer: {p.tail()}")
            time.sleep(0.1)

    def run(self, name, argv):
        rc, tail = self.procs.run(name, argv, self.log(name), timeout=self.args.timeout)
        if rc != 0:
            raise db.SetupError(f"{name}: " + ("timed out" if rc is None else f"exited {rc}") +
                                f": {tail}")

    def serve(self, name, extra, uris):
        sock = os.path.join(self.tmp, "vol0.sock")
        ctl = os.path.join(self.tmp, "control.sock")
        p = self.procs.start(name, [self.agg, "serve", "--unix", sock, "--control", ctl] +
                             extra + uris, self.log(name))
        return p, f"nbd+unix:///vol0?socket={sock}", ctl

    def setup(self, uris):
        """The mirror, with --written bytes of random data from its start."""
        self.run("create", [self.agg, "create", "--name", "vol0", "--layout", "mirror",
                            "--copies", "2"] + uris)
        src = os.path.join(self.tmp, "data.bin")
        with open(src, "wb") as f:
            for _ in range(self.args.written // MIB):
                f.write(os.urandom(MIB))
        p, uri, _ = self.serve("serve-fill", [], uris)
        self.wait_ready(uri, p)
        self.run("fill", ["nbdcopy", src, uri])
        os.unlink(src)
        self.procs.stop(p)
        if p.popen.returncode != 0:
            raise db.SetupError(f"serve (fill) exited {p.popen.returncode}: {p.tail()}")

    def wait_line(self, p, line, deadline):
        """Polls p's log for `line` every 10 ms; the monotonic time it was seen."""
        while True:
            with open(p.log_path, errors="replace") as f:
                if line in f.read():
                    return time.monotonic()
            if not p.alive():
                raise db.SetupError(f"{p.name} exited before '{line}': {p.tail()}")
            if time.monotonic() > deadline:
                raise db.SetupError(f"no '{line}' within {self.args.timeout:.0f} s")
            time.sleep(0.01)

    def rebuild_round(self, i, uris):
        p, _, ctl = self.serve(f"serve-rebuild-{i}", ["--discard", "1"] + self.rate(), uris)
        deadline = time.monotonic() + self.args.timeout
        t0 = self.wait_line(p, START_LINE, deadline)
        cpu0 = db.cpu_seconds(p.pid)
        t1 = self.wait_line(p, DONE_LINE, deadline)
        cpu1 = db.cpu_seconds(p.pid)
        rebuilt = self.rebuilt(ctl)
        self.procs.stop(p)
        seconds = t1 - t0
        return {"seconds": seconds, "bytes": rebuilt, "mib_s": rebuilt / MIB / seconds,
                "cpu_s": cpu1 - cpu0, "cpu_ms_per_mib": 1000 * (cpu1 - cpu0) / (rebuilt / MIB)}

    def nbdcopy_round(self, i, src_uri):
        name = f"copy{i}"  # a socket of its own: nbdkit's last one may still be there
        dst_uri = self.member(name, fresh=True)
        t0 = time.monotonic()
        self.run(f"nbdcopy-{i}", ["nbdcopy", src_uri, dst_uri])
        seconds = time.monotonic() - t0
        self.procs.stop(self.members.pop(name))
        os.unlink(os.path.join(self.tmp, name + ".img"))
        return {"seconds": seconds, "mib_s": self.args.written / MIB / seconds}

    def rate(self):
        rate = []
        if self.args.rate_min:
            rate += ["--resync-rate-min", self.args.rate_min]
        if self.args.rate_max:
            rate += ["--resync-rate-max", self.args.rate_max]
        return rate

    def rebuilt(self, ctl):
        """rebuild_bytes in `status --json`, 0 if not there."""
        status = subprocess.run([self.agg, "status", "--json", "--control", ctl],
                                capture_output=True, text=True, timeout=10).stdout
        m = re.search(r'"rebuild_bytes": (\d+)', status)
        return int(m.group(1)) if m else 0

    def fio_p99(self, name, uri, ctl=None):
        """fio 4K randread QD8 over the written range for --fio seconds: IOPS, p99 µs, and
        with `ctl` the bytes rebuilt when fio started, 1 s later and when it ended."""
        out = os.path.join(self.resdir, name + ".json")
        rebuilt = [self.rebuilt(ctl)] if ctl else []
        p = self.procs.start(
            name, ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", "--rw=randread",
                   "--bs=4k", "--iodepth=8", f"--size={self.args.written}", "--time_based",
                   f"--runtime={self.args.fio:g}", "--norandommap", "--percentile_list=50:99",
                   "--output-format=json", f"--output={out}"], self.log(name))
        if ctl:
            time.sleep(1)
            rebuilt.append(self.rebuilt(ctl))
        try:
            rc = p.popen.wait(timeout=self.args.fio + 60)
        except subprocess.TimeoutExpired:
            rc = None
        if ctl:
            rebuilt.append(self.rebuilt(ctl))
        self.procs.stop(p)
        if rc != 0:
            raise db.SetupError(f"{name}: " + ("timed out" if rc is None else f"exited {rc}") +
                                f": {p.tail()}")
        with open(out) as f:
            job = json.load(f)["jobs"][0]["read"]
        return {"iops": job["iops"], "p99_us": job["clat_ns"]["percentile"]["99.000000"] / 1000,
                "rebuilt_at_start_1s_end": rebuilt}

    def fio_round(self, uris):
        """p99 of client reads with no background job, then during a full rebuild."""
        p, uri, _ = self.serve("serve-fio-idle", [], uris)
        self.wait_ready(uri, p)
        idle = self.fio_p99("fio-idle", uri)
        self.procs.stop(p)
        p, uri, ctl = self.serve("serve-fio-rebuild", ["--discard", "1"] + self.rate(), uris)
        self.wait_line(p, START_LINE, time.monotonic() + self.args.timeout)
        busy = self.fio_p99("fio-rebuild", uri, ctl)
        with open(p.log_path, errors="replace") as f:
            busy["rebuild_done_during"] = DONE_LINE in f.read()
        busy["rebuild_bytes"] = busy["rebuilt_at_start_1s_end"][-1]
        self.procs.stop(p)
        return {"idle": idle, "rebuild": busy, "p99_ratio": busy["p99_us"] / idle["p99_us"]}

    def main(self):
        uris = [self.member("m0"), self.member("m1")]
        self.setup(uris)
        rounds = []
        for i in range(self.args.rounds):
            r = {"rebuild": self.rebuild_round(i, uris), "nbdcopy": self.nbdcopy_round(i, uris[0])}
            r["ratio"] = r["rebuild"]["mib_s"] / r["nbdcopy"]["mib_s"]
            print(f"round {i + 1}: rebuild {r['rebuild']['mib_s']:.0f} MiB/s, "
                  f"nbdcopy {r['nbdcopy']['mib_s']:.0f} MiB/s", flush=True)
            rounds.append(r)
        fio = self.fio_round(uris) if self.args.fio > 0 else None
        return rounds, fio


def median(rounds, *path):
    values = []
    for r in rounds:
        for k in path:
            r = r[k]
        values.append(r)
    return statistics.median(values)


def markdown(res):
    rs, a = res["rounds"], res["settings"]
    ratio = median(rs, "ratio")
    load = res["loadavg_start"], res["loadavg_end"]
    lines = [
        f"Rebuild of a 2-copy mirror, members {db.fmt_size(a['size'])} sparse files on "
        f"{a['tmpdir']} ({res['fs']}), {db.fmt_size(a['written'])} written; "
        f"median of {len(rs)} rounds; idle clients, rate maximum "
        f"{a['rate_max'] or 'the default (200M)'}, minimum "
        f"{a.get('rate_min') or 'the default (1M)'}; "
        f"build {res['build'].get('type')}; {res['machine'].get('cpu_model')}, "
        f"{res['machine']['nproc']} CPUs; load average at start "
        f"{' '.join(f'{x:.2f}' for x in load[0])}, at end {' '.join(f'{x:.2f}' for x in load[1])}.",
        "",
        "| what | seconds | MiB copied | MiB/s | aggregator CPU ms/MiB |",
        "|---|---|---|---|---|",
        f"| rebuild (`serve --discard 1`, start line to done line) | "
        f"{median(rs, 'rebuild', 'seconds'):.2f} | {median(rs, 'rebuild', 'bytes') / MIB:.0f} | "
        f"{median(rs, 'rebuild', 'mib_s'):.0f} | {median(rs, 'rebuild', 'cpu_ms_per_mib'):.2f} |",
        f"| `nbdcopy` member 0 to a fresh export | {median(rs, 'nbdcopy', 'seconds'):.2f} | "
        f"{a['written'] / MIB:.0f} (written) | {median(rs, 'nbdcopy', 'mib_s'):.0f} | - |",
        "",
        f"Rebuild / nbdcopy: {100 * ratio:.0f} % (median of per-round ratios; target >= 70 %: "
        f"{'met' if ratio >= 0.7 else 'not met'}).",
    ]
    f = res.get("fio")
    if f:
        i, b = f["idle"], f["rebuild"]
        lines += [
            "",
            f"Client 4K randread QD8 ({a['fio']:g} s, fio's nbd engine, over the written range):",
            "",
            "| when | IOPS | p99 µs |",
            "|---|---|---|",
            f"| idle (no background job) | {i['iops']:.0f} | {i['p99_us']:.0f} |",
            f"| during the rebuild (rebuilt MiB at fio's start, 1 s later, end: "
            f"{', '.join(f'{x / MIB:.0f}' for x in b['rebuilt_at_start_1s_end'])}"
            f"{', finished' if b['rebuild_done_during'] else ''}) | {b['iops']:.0f} | "
            f"{b['p99_us']:.0f} |",
            "",
            f"p99 during / idle: {f['p99_ratio']:.2f} (target <= 2: "
            f"{'met' if f['p99_ratio'] <= 2 else 'not met'}).",
        ]
    return "\n".join(lines) + "\n"


def main(argv):
    args = parse_args(argv)
    build = db.ensure_build(args)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    resdir = os.path.join(db.RESULTS, "rebuild-" + stamp)
    os.makedirs(resdir, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (_ for _ in ()).throw(db.Interrupted(f"signal {s}")))
    res = {"machine": db.machine_info(), "build": build, "fs": db.fs_type(args.tmpdir),
           "settings": {k: v for k, v in vars(args).items()},
           "loadavg_start": list(os.getloadavg())}
    bench = Rebuild(args, build, resdir)
    try:
        res["rounds"], res["fio"] = bench.main()
    except (db.SetupError, db.Interrupted, KeyboardInterrupt) as e:
        sys.exit(f"rebuild.sh: {e} (logs in {resdir}/logs)")
    finally:
        bench.cleanup()
    res["loadavg_end"] = list(os.getloadavg())
    with open(os.path.join(resdir, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(os.path.join(resdir, "summary.md"), "w") as f:
        f.write(md)
    print("\n" + md + f"\n(results in {resdir})")


if __name__ == "__main__":
    main(sys.argv[1:])
