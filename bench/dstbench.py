#!/usr/bin/python3
"""dst benchmark harness: fio's nbd engine against NBD servers on Unix sockets.

Run it through bench/run.sh; bench/README.md describes the configurations, the
workloads, the output and the caveats. Standard library only (Debian's
/usr/bin/python3).

Every process it starts gets its own process group and PR_SET_PDEATHSIG
(SIGTERM), nbdkit also --exit-with-parent; all of them are stopped on exit,
error, Ctrl-C, SIGTERM and SIGHUP, and the tmpfs directory is removed.
"""

import argparse
import csv
import ctypes
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
RESULTS = os.path.join(BENCH, "results")

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# ---------------------------------------------------------------------------
# Workloads and configurations


class Workload:
    def __init__(self, name, desc, rw, bs, iodepth, numjobs=1, rwmixread=None):
        self.name, self.desc = name, desc
        self.rw, self.bs, self.iodepth, self.numjobs, self.rwmixread = (
            rw, bs, iodepth, numjobs, rwmixread)

    def fio_args(self):
        a = [f"--rw={self.rw}", f"--bs={self.bs}", f"--iodepth={self.iodepth}",
             f"--numjobs={self.numjobs}"]
        if self.rwmixread is not None:
            a.append(f"--rwmixread={self.rwmixread}")
        return a

    def as_dict(self):
        return {"description": self.desc, "rw": self.rw, "bs": self.bs,
                "iodepth": self.iodepth, "numjobs": self.numjobs,
                "rwmixread": self.rwmixread}


WORKLOADS = [
    Workload("randread-4k-qd1", "4 KiB random read, QD1, 1 job", "randread", "4k", 1),
    Workload("randread-4k-qd32", "4 KiB random read, QD32, 1 job", "randread", "4k", 32),
    Workload("randwrite-4k-qd1", "4 KiB random write, QD1, 1 job", "randwrite", "4k", 1),
    Workload("randwrite-4k-qd32", "4 KiB random write, QD32, 1 job", "randwrite", "4k", 32),
    Workload("seqread-1m-qd8", "1 MiB sequential read, QD8, 1 job", "read", "1M", 8),
    Workload("seqwrite-1m-qd8", "1 MiB sequential write, QD8, 1 job", "write", "1M", 8),
    Workload("randread-4k-qd32x4", "4 KiB random read, QD32, 4 jobs (4 NBD connections)",
             "randread", "4k", 32, numjobs=4),
    Workload("randrw70-4k-qd32x4",
             "4 KiB random 70% read / 30% write, QD32, 4 jobs (4 NBD connections)",
             "randrw", "4k", 32, numjobs=4, rwmixread=70),
    # Many clients with deep queues: what the server's peak RSS is measured on.
    Workload("randrw70-4k-qd128x8",
             "4 KiB random 70% read / 30% write, QD128, 8 jobs (8 NBD connections)",
             "randrw", "4k", 128, numjobs=8, rwmixread=70),
]
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}

# name -> (description, members it needs)
CONFIGS = {
    "direct": ("fio → nbdkit + dst plugin, file on tmpfs (the baseline)", ["m0"]),
    "direct-memory": ("fio → nbdkit memory plugin", ["mem"]),
    "agg1": ("fio → dst-aggregator serve --raw → the direct member", ["m0"]),
    "agg-stripe4": ("fio → dst-aggregator serve --raw --layout stripe (64K chunks) → "
                    "4 nbdkit + dst plugin members of SIZE/4", ["s0", "s1", "s2", "s3"]),
    "nbdkit-proxy": ("fio → nbdkit nbd plugin (uri=) → the direct member", ["m0"]),
    "qemu-nbd": ("fio → qemu-nbd --image-opts driver=nbd → the direct member", ["m0"]),
    "qemu-nbd-noextents": ("fio → qemu-nbd driver=nbd → nbdkit --filter=noextents + dst "
                           "plugin on the direct member's file", ["m0x"]),
    "agg1-crc32c": ("fio → dst-aggregator serve (create --checksum crc32c) → "
                    "its own nbdkit + dst plugin member", ["c-crc32c"]),
    "agg1-blake2b": ("fio → dst-aggregator serve (create --checksum blake2b) → "
                     "its own nbdkit + dst plugin member", ["c-blake2b"]),
    "agg1-keyed": ("fio → dst-aggregator serve (create --checksum blake2b-keyed) → "
                   "its own nbdkit + dst plugin member", ["c-keyed"]),
    "agg1-encrypted": ("fio → dst-aggregator serve (create --encrypt: AES-256-XTS and "
                       "blake2b-keyed MACs) → its own nbdkit + dst plugin member", ["c-enc"]),
    # Redundancy against slow members: each member sits behind nbdkit's delay
    # filter (--delay-ms per read and write, parallel requests), so that the
    # members' latency, not the CPU, bounds the IOPS.
    "direct-delay": ("fio → nbdkit --filter=delay + dst plugin (parallel requests), the "
                     "one slow member", ["d0"]),
    "agg1-delay": ("fio → dst-aggregator serve (create, crc32c) → one slow member",
                   ["cd0"]),
    "agg-mirror2-delay": ("fio → dst-aggregator serve (create --layout mirror --copies 2) → "
                          "2 slow members", ["cm0", "cm1"]),
}
# What each request waits in the delay filter of the slow members (--delay-ms).
# 5 ms: at 1 ms the chain (fio, aggregator, members' worker threads) needed
# most of the 2 CPUs at the IOPS the members allowed, so the CPU, not the
# members, set the ratios (docs/benchmarks.md, "Redundancy").
DELAY_MS = 5
BASELINE = "direct"


def parse_size(s):
    s = s.strip()
    mult = {"k": KIB, "m": MIB, "g": GIB, "t": 1 << 40}
    if s and s[-1].lower() in mult:
        return int(float(s[:-1]) * mult[s[-1].lower()])
    return int(s)


def fmt_size(n):
    for unit, m in (("G", GIB), ("M", MIB), ("K", KIB)):
        if n >= m and n % m == 0:
            return f"{n // m}{unit}"
    return str(n)


def split_names(values, known, what):
    names = []
    for v in values or []:
        for n in v.split(","):
            n = n.strip()
            if not n:
                continue
            if n == "all":
                names.extend(known)
            elif n not in known:
                sys.exit(f"dstbench: unknown {what} {n!r}; known: {', '.join(known)}")
            else:
                names.append(n)
    seen = set()
    return [n for n in names if not (n in seen or seen.add(n))]


# ---------------------------------------------------------------------------
# Processes


class Interrupted(Exception):
    pass


class SetupError(Exception):
    pass


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup(parent):
    # Die with the harness even if it is killed with SIGKILL.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


class Proc:
    def __init__(self, name, argv, log_path):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.log = open(log_path, "ab")
        self.log.write(("$ " + " ".join(argv) + "\n").encode())
        self.log.flush()
        parent = os.getpid()
        self.popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            process_group=0, preexec_fn=lambda: _child_setup(parent))
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def tail(self, n=3):
        """The last lines of its output, preferring the last error lines."""
        try:
            with open(self.log_path, "rb") as f:
                lines = [l.strip() for l in f.read().decode(errors="replace").splitlines()
                         if l.strip() and not l.startswith("$ ")][-50:]
        except OSError:
            return ""
        errs = [l for l in lines if any(w in l.lower() for w in
                                        ("error", "fatal", "abort", "assert", "sanitizer"))]
        return " | ".join((errs or lines)[-n:])

    def signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class ProcTable:
    """Every process the harness started, stopped in reverse order."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path):
        p = Proc(name, argv, log_path)
        self.procs.append(p)
        return p

    def run(self, name, argv, log_path, timeout):
        """Runs a command to completion; returns (rc, log tail). rc None: timed out."""
        p = self.start(name, argv, log_path)
        try:
            rc = p.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            return None, p.tail()
        finally:
            self.forget(p)
        return rc, p.tail()

    def forget(self, p):
        if p in self.procs and not p.alive():
            self.procs.remove(p)
            p.log.close()

    def stop(self, p, grace=5.0):
        # Groups are signalled only while their leader is unreaped, so a
        # recycled id can never be hit.
        if p.alive():
            p.signal_group(signal.SIGTERM)
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.signal_group(signal.SIGKILL)
                p.popen.wait(timeout=5)
        self.forget(p)

    def stop_all(self, grace=5.0):
        procs = list(reversed(self.procs))
        for p in procs:
            if p.alive():
                p.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            if p.alive():
                p.signal_group(signal.SIGKILL)
                try:
                    p.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    print(f"dstbench: warning: {p.name} (pid {p.pid}) did not exit",
                          file=sys.stderr)
            self.forget(p)


def quick_output(argv, timeout=10):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


# ---------------------------------------------------------------------------
# /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of every thread of pid, in seconds; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (clear_refs 5); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_info():
    info = {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "kernel": os.uname().release, "hostname": os.uname().nodename}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["mem_total_bytes"] = int(line.split()[1]) * KIB
    except OSError:
        pass
    info["loadavg_start"] = list(os.getloadavg())
    return info


def tool_versions():
    def first(argv):
        out = quick_output(argv)
        return out.splitlines()[0] if out else "?"
    v = {"fio": first(["fio", "--version"]), "nbdkit": first(["nbdkit", "--version"]),
         "nbdinfo": first(["nbdinfo", "--version"])}
    if shutil.which("qemu-nbd"):
        v["qemu-nbd"] = first(["qemu-nbd", "--version"])
    return v


def source_commit():
    """The checked-out commit, read from .git (the working tree may differ)."""
    try:
        with open(os.path.join(REPO, ".git", "HEAD")) as f:
            head = f.read().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        p = os.path.join(REPO, ".git", ref)
        if os.path.exists(p):
            with open(p) as f:
                return f.read().strip()
        with open(os.path.join(REPO, ".git", "packed-refs")) as f:
            for line in f:
                if line.strip().endswith(" " + ref):
                    return line.split()[0]
    except OSError:
        pass
    return None


def fs_type(path):
    best, typ = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, typ = mnt, parts[2]
    except OSError:
        pass
    return typ


# ---------------------------------------------------------------------------
# Build


def ensure_build(args):
    bd = os.path.abspath(args.build_dir)
    agg = os.path.join(bd, "aggregator", "dst-aggregator")
    plugin = os.path.join(bd, "nbdkit-plugin", "nbdkit-dst-plugin.so")
    if not args.no_build:
        if not os.path.exists(os.path.join(bd, "CMakeCache.txt")):
            # Release is -O3; GCC 12 reports false -Wrestrict positives there,
            # so warnings are not errors in this build (scripts/test.sh keeps -Werror).
            cmd = ["cmake", "-S", REPO, "-B", bd, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                   "-DDST_WERROR=OFF", "-DDST_SANITIZE=OFF"]
            print("dstbench: configuring:", " ".join(cmd), flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode:
                sys.exit("dstbench: cmake configure failed:\n" + (r.stdout + r.stderr)[-3000:])
        cmd = ["cmake", "--build", bd, "--target", "dst-aggregator", "nbdkit-dst-plugin"]
        print("dstbench: building:", " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if r.returncode:
            sys.exit("dstbench: build failed (use --no-build to run the binaries already in "
                     f"{bd}):\n" + (r.stdout + r.stderr)[-3000:])
    for p in (agg, plugin):
        if not os.path.exists(p):
            sys.exit(f"dstbench: {p} is missing (build it, or drop --no-build)")
    build = {"dir": bd, "aggregator": agg, "plugin": plugin}
    try:
        with open(os.path.join(bd, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    build["type"] = line.split("=", 1)[1].strip() or "(none)"
                if line.startswith("DST_SANITIZE:") and line.split("=", 1)[1].strip() == "ON":
                    build["sanitize"] = True
    except OSError:
        pass
    if build.get("sanitize"):
        print("dstbench: warning: the build has sanitizers on; numbers mean little",
              file=sys.stderr)
    if build.get("type") not in ("Release", "RelWithDebInfo"):
        print(f"dstbench: warning: build type {build.get('type')}: not optimised",
              file=sys.stderr)
    build["aggregator_mtime"] = datetime.datetime.fromtimestamp(
        os.path.getmtime(agg), datetime.timezone.utc).isoformat(timespec="seconds")
    return build


def check_tools(configs):
    missing = []
    for tool, pkg in (("fio", "fio"), ("nbdkit", "nbdkit"), ("nbdinfo", "libnbd-bin")):
        if not shutil.which(tool):
            missing.append(pkg)
    if missing:
        sys.exit("dstbench: missing tools; install them with:\n"
                 f"  sudo apt-get install -y {' '.join(missing)}")
    r = subprocess.run(["fio", "--enghelp=nbd"], capture_output=True, text=True, timeout=10)
    if r.returncode or "uri" not in r.stdout:
        sys.exit("dstbench: this fio has no nbd engine (Debian's fio 3.33 does)")
    if "qemu-nbd" in configs and not shutil.which("qemu-nbd"):
        print("dstbench: qemu-nbd is missing (sudo apt-get install -y qemu-utils); "
              "the qemu-nbd configuration will fail", file=sys.stderr)


# ---------------------------------------------------------------------------
# The bench


def proc_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def remove_stale_tmpdirs(tmpdir):
    """Removes dst-bench.* directories of harnesses that were killed (SIGKILL)."""
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return
    for n in names:
        d = os.path.join(tmpdir, n)
        if not n.startswith("dst-bench.") or not os.path.isdir(d):
            continue
        try:
            with open(os.path.join(d, "owner.pid")) as f:
                pid, start = f.read().split()
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if proc_start_time(int(pid)) != start:
            print(f"dstbench: removing {d}, left by a harness that was killed", file=sys.stderr)
            shutil.rmtree(d, ignore_errors=True)


class ConfigState:
    def __init__(self, name):
        self.name = name
        self.desc = CONFIGS[name][0]
        self.member_names = CONFIGS[name][1]
        self.error = None  # why it cannot run (setup failed, server died)
        self.uri = None
        self.size = None
        self.server = None  # the Proc under test
        self.members = []  # its member Procs (empty for direct configs)
        self.precondition = None

    def as_dict(self):
        return {"description": self.desc, "status": "failed" if self.error else "ok",
                "error": self.error, "uri": self.uri, "size_bytes": self.size,
                "server": self.server.name if self.server else None,
                "server_argv": self.server.argv if self.server else None,
                "members": [m.name for m in self.members],
                "precondition": self.precondition}


class Bench:
    def __init__(self, args, build, resdir):
        self.args, self.build, self.resdir = args, build, resdir
        self.procs = ProcTable()
        remove_stale_tmpdirs(args.tmpdir)
        self.tmp = tempfile.mkdtemp(prefix="dst-bench.", dir=args.tmpdir)
        with open(os.path.join(self.tmp, "owner.pid"), "w") as f:
            f.write(f"{os.getpid()} {proc_start_time(os.getpid())}\n")
        self.logdir = os.path.join(resdir, "logs")
        self.fiodir = os.path.join(resdir, "fio")
        os.makedirs(self.logdir, exist_ok=True)
        os.makedirs(self.fiodir, exist_ok=True)
        self.members = {}  # name -> (Proc, uri) or SetupError
        self.configs = {}
        self.runs = []

    def cleanup(self):
        self.procs.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sock(self, name):
        return os.path.join(self.tmp, name + ".sock")

    def log(self, name):
        return os.path.join(self.logdir, name + ".log")

    # -- servers ---------------------------------------------------------

    def wait_ready(self, uri, procs, timeout=20.0):
        """Polls the export with nbdinfo until it answers; returns its size."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            for p in procs:
                if not p.alive():
                    raise SetupError(f"{p.name} exited with status {p.popen.returncode}: "
                                     f"{p.tail() or '(no output)'}")
            try:
                r = subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                                   text=True, timeout=5)
                if r.returncode == 0:
                    return int(r.stdout.strip())
                last = r.stderr.strip()
            except subprocess.TimeoutExpired:
                last = "nbdinfo timed out"
            if time.monotonic() > deadline:
                raise SetupError(f"{uri} did not answer within {timeout:.0f} s: {last}")
            time.sleep(0.1)

    def nbdkit_file(self, name, size, slow=False):
        path = os.path.join(self.tmp, name + ".img")
        sock = self.sock(name)
        # A slow member: every read and write waits --delay-ms in the delay
        # filter, and requests of one connection run in parallel (otherwise one
        # connection could have one request in the filter at a time).
        delay = ["--filter=delay"] if slow else []
        delay_ms = self.args.delay_ms
        delay_args = ([f"delay-read={delay_ms}ms", f"delay-write={delay_ms}ms",
                       "parallel-requests=true"] if slow else [])
        p = self.procs.start(
            f"nbdkit[{name}]",
            ["nbdkit", "--exit-with-parent", "-U", sock] + delay + [self.build["plugin"],
             f"file={path}", f"size={size}", f"name={name}"] + delay_args,
            self.log("member-" + name))
        return p, f"nbd+unix:///{name}?socket={sock}"

    def member(self, name):
        """Starts a member once; returns (Proc, uri)."""
        if name in self.members:
            m = self.members[name]
            if isinstance(m, SetupError):
                raise m
            return m
        size = self.args.size
        try:
            if name == "mem":
                sock = self.sock(name)
                p = self.procs.start("nbdkit[memory]",
                                     ["nbdkit", "--exit-with-parent", "-U", sock, "memory",
                                      f"size={size}"], self.log("member-mem"))
                m = (p, f"nbd+unix:///?socket={sock}")
            elif name.startswith("s"):
                m = self.nbdkit_file(name, size // 4 // MIB * MIB)
            elif name in ("d0", "cd0", "cm0", "cm1"):
                m = self.nbdkit_file(name, size, slow=True)
            elif name == "m0x":
                # A second nbdkit on m0's file whose noextents filter answers
                # block status itself (see README: qemu-nbd and SEEK_HOLE).
                self.member("m0")
                sock = self.sock(name)
                p = self.procs.start(
                    "nbdkit[m0x noextents]",
                    ["nbdkit", "--exit-with-parent", "-U", sock, "--filter=noextents",
                     self.build["plugin"], f"file={os.path.join(self.tmp, 'm0.img')}",
                     "name=m0"], self.log("member-m0x"))
                m = (p, f"nbd+unix:///m0?socket={sock}")
            else:
                m = self.nbdkit_file(name, size)
            self.wait_ready(m[1], [m[0]])
        except SetupError as e:
            self.members[name] = SetupError(f"member {name}: {e}")
            raise self.members[name]
        self.members[name] = m
        return m

    def start_config(self, c):
        agg = self.build["aggregator"]
        members = [self.member(n) for n in c.member_names]
        sock = self.sock(c.name)
        if c.name in ("direct", "direct-memory", "direct-delay"):
            c.server, c.uri = members[0]
            c.members = []
        else:
            c.members = [p for p, _ in members]
            uris = [u for _, u in members]
            if c.name == "agg1":
                argv = [agg, "serve", "--raw", "--unix", sock, "--name", "vol0", uris[0]]
                c.uri = f"nbd+unix:///vol0?socket={sock}"
            elif c.name == "agg-stripe4":
                argv = [agg, "serve", "--raw", "--layout", "stripe", "--unix", sock,
                        "--name", "vol0"] + uris
                c.uri = f"nbd+unix:///vol0?socket={sock}"
            elif c.name == "nbdkit-proxy":
                argv = ["nbdkit", "--exit-with-parent", "-U", sock, "nbd", f"uri={uris[0]}"]
                c.uri = f"nbd+unix:///?socket={sock}"
            elif c.name in ("qemu-nbd", "qemu-nbd-noextents"):
                if not shutil.which("qemu-nbd"):
                    raise SetupError("qemu-nbd is not installed (sudo apt-get install -y qemu-utils)")
                msock = self.sock(c.member_names[0])
                # --persistent: keep serving after the first client; --shared:
                # the 4-job workload opens 4 connections (plus nbdinfo's).
                argv = ["qemu-nbd", "--persistent", "--shared=16", "--export-name=vol0",
                        f"--socket={sock}",
                        "--image-opts",
                        f"driver=nbd,server.type=unix,server.path={msock},export=m0"]
                c.uri = f"nbd+unix:///vol0?socket={sock}"
            elif c.name in ("agg1-crc32c", "agg1-blake2b", "agg1-delay", "agg-mirror2-delay",
                            "agg1-keyed", "agg1-encrypted"):
                key = []
                if c.name in ("agg1-keyed", "agg1-encrypted"):
                    path = os.path.join(self.tmp, f"{c.name}.key")
                    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                              "wb") as f:
                        f.write(os.urandom(32))
                    key = ["--key-file", path]
                if c.name == "agg-mirror2-delay":
                    options = ["--layout", "mirror", "--copies", "2"]
                elif c.name == "agg1-keyed":
                    options = ["--checksum", "blake2b-keyed"] + key
                elif c.name == "agg1-encrypted":
                    options = ["--encrypt"] + key
                else:
                    options = ["--checksum", c.name.split("-", 1)[1].replace("delay", "crc32c")]
                rc, tail = self.procs.run(
                    f"create[{c.name}]",
                    [agg, "create", "--name", "vol0"] + options + uris,
                    self.log(f"create-{c.name}"), timeout=60)
                if rc != 0:
                    raise SetupError("dst-aggregator create " +
                                     ("timed out" if rc is None else f"exited {rc}") +
                                     f": {tail or '(no output)'}")
                argv = [agg, "serve", "--unix", sock] + key + uris
                c.uri = f"nbd+unix:///vol0?socket={sock}"
            else:
                raise AssertionError(c.name)
            if argv[:2] == [agg, "serve"] and self.args.workers is not None:
                argv = argv[:2] + ["--workers", str(self.args.workers)] + argv[2:]
            if argv[:2] == [agg, "serve"] and self.args.threads is not None:
                argv = argv[:2] + ["--threads", str(self.args.threads)] + argv[2:]
            c.server = self.procs.start(f"{c.name}-server", argv, self.log("server-" + c.name))
        c.size = self.wait_ready(c.uri, [c.server] + c.members)
        if c.size < 16 * MIB:
            raise SetupError(f"export is only {c.size} bytes")

    def precondition(self, c):
        """One sequential 1 MiB QD8 write pass over the whole export, through it."""
        out = os.path.join(self.fiodir, f"precondition-{c.name}.json")
        argv = ["fio", "--name=precondition", "--ioengine=nbd", f"--uri={c.uri}",
                "--rw=write", "--bs=1M", "--iodepth=8", "--output-format=json",
                f"--output={out}"]
        timeout = 60 + c.size / (10 * MIB)
        t0 = time.monotonic()
        rc, tail = self.procs.run(f"fio[precondition {c.name}]", argv,
                                  self.log(f"fio-precondition-{c.name}"), timeout)
        if rc != 0:
            raise SetupError("precondition fio " + ("timed out" if rc is None else f"exited {rc}")
                             + f": {tail}")
        try:
            with open(out) as f:
                job = json.load(f)["jobs"][0]
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise SetupError(f"precondition: unreadable fio output: {e}")
        if job.get("error"):
            raise SetupError(f"precondition: fio error {job['error']}: {tail}")
        written = job["write"]["io_bytes"]
        if written < c.size - MIB:
            raise SetupError(f"precondition wrote {written} of {c.size} bytes")
        c.precondition = {"bytes": written, "seconds": round(time.monotonic() - t0, 2),
                          "bw_bytes": job["write"]["bw_bytes"]}

    def setup(self, names):
        for name in names:
            c = ConfigState(name)
            self.configs[name] = c
            print(f"dstbench: setting up {name}: {c.desc}", flush=True)
            try:
                self.start_config(c)
                self.precondition(c)
                print(f"dstbench:   {c.uri}: {c.size} bytes, preconditioned in "
                      f"{c.precondition['seconds']} s "
                      f"({c.precondition['bw_bytes'] / MIB:.0f} MiB/s)", flush=True)
            except SetupError as e:
                c.error = f"setup: {e}"
                print(f"dstbench:   FAILED: {c.error}", flush=True)
                if c.server and c.name not in ("direct", "direct-memory", "direct-delay"):
                    self.procs.stop(c.server)  # not a shared member

    # -- runs --------------------------------------------------------------

    def check_alive(self, c):
        for p in [c.server] + c.members:
            if not p.alive():
                c.error = (f"{p.name} exited with status {p.popen.returncode} during the "
                           f"benchmark: {p.tail() or '(no output)'}")
                return False
        return True

    def run_one(self, c, w, rnd):
        a = self.args
        rec = {"workload": w.name, "round": rnd, "config": c.name, "ok": False, "error": None}
        if c.error:
            rec["error"] = "skipped: " + c.error
            return rec
        if not self.check_alive(c):
            rec["error"] = c.error
            return rec
        pids = {"server": [c.server.pid], "members": [m.pid for m in c.members]}
        hwm_reset = all(reset_hwm(pid) for pid in pids["server"] + pids["members"])
        out = os.path.join(self.fiodir, w.name, f"r{rnd}-{c.name}.json")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        argv = (["fio", f"--name={w.name}", "--ioengine=nbd", f"--uri={c.uri}"] + w.fio_args() +
                ["--group_reporting", "--unified_rw_reporting=both", "--time_based",
                 f"--runtime={a.runtime}", f"--ramp_time={a.ramp}", "--norandommap",
                 "--percentile_list=50:99:99.9", "--output-format=json", f"--output={out}"])
        p = self.procs.start(f"fio[{w.name} {c.name}]", argv,
                             self.log(f"fio-{w.name}-r{rnd}-{c.name}"))
        try:
            # CPU is counted from the end of the ramp, as fio counts I/Os.
            try:
                p.popen.wait(timeout=a.ramp)
            except subprocess.TimeoutExpired:
                pass
            cpu0 = {k: [cpu_seconds(pid) for pid in v] for k, v in pids.items()}
            try:
                rc = p.popen.wait(timeout=a.runtime + 30)
            except subprocess.TimeoutExpired:
                rc = None
            cpu1 = {k: [cpu_seconds(pid) for pid in v] for k, v in pids.items()}
            if rc is None:
                self.procs.stop(p)
                rec["error"] = f"fio did not finish within {a.ramp + a.runtime + 30} s"
                return rec
        finally:
            self.procs.stop(p, grace=2)
        if rc != 0:
            rec["error"] = f"fio exited {rc}: {p.tail()}"
            self.check_alive(c)
            return rec
        try:
            with open(out) as f:
                job = json.load(f)["jobs"][0]
            mixed = job["mixed"]
            ios = job["read"]["total_ios"] + job["write"]["total_ios"]
            pct = mixed["clat_ns"].get("percentile", {})
        except (OSError, ValueError, KeyError, IndexError) as e:
            rec["error"] = f"unreadable fio output {out}: {e}"
            return rec
        if job.get("error"):
            rec["error"] = f"fio job error {job['error']}: {p.tail()}"
            self.check_alive(c)
            return rec
        if ios == 0:
            rec["error"] = "fio completed no I/O"
            return rec

        def cpu_delta(k):
            if any(x is None for x in cpu0[k] + cpu1[k]):
                return None
            return sum(cpu1[k]) - sum(cpu0[k])

        srv_cpu, mem_cpu = cpu_delta("server"), cpu_delta("members")
        hwm_srv = [vm_hwm_kib(pid) for pid in pids["server"]]
        hwm_mem = [vm_hwm_kib(pid) for pid in pids["members"]]
        rec.update({
            "ok": True,
            "iops": mixed["iops"],
            "read_iops": job["read"]["iops"],
            "write_iops": job["write"]["iops"],
            "bw_bytes": mixed["bw_bytes"],
            "p50_us": pct.get("50.000000", 0) / 1000,
            "p99_us": pct.get("99.000000", 0) / 1000,
            "p999_us": pct.get("99.900000", 0) / 1000,
            "mean_us": mixed["clat_ns"]["mean"] / 1000,
            "ios": ios,
            "fio_runtime_ms": mixed.get("runtime"),
            "client_cpu_pct": job.get("usr_cpu", 0) + job.get("sys_cpu", 0),
            "server_cpu_s": srv_cpu,
            "members_cpu_s": mem_cpu,
            "server_cpu_us_per_io": None if srv_cpu is None else srv_cpu / ios * 1e6,
            "total_cpu_us_per_io": (None if srv_cpu is None or mem_cpu is None
                                    else (srv_cpu + mem_cpu) / ios * 1e6),
            "server_hwm_kib": None if None in hwm_srv else sum(hwm_srv),
            "members_hwm_kib": None if None in hwm_mem else sum(hwm_mem),
            "hwm_since": "run" if hwm_reset else "server start",
            "fio_json": os.path.relpath(out, self.resdir),
        })
        return rec

    def run_all(self, workloads, names, save):
        a = self.args
        total = len(workloads) * a.rounds * len(names)
        up = sum(1 for n in names if not self.configs[n].error)
        est = len(workloads) * a.rounds * up * (a.ramp + a.runtime + 0.7)
        print(f"dstbench: {total} runs, about {est / 60:.0f} min", flush=True)
        i = 0
        for w in workloads:
            for rnd in range(1, a.rounds + 1):
                # Round-robin, starting one configuration later each round.
                k = (rnd - 1) % max(1, len(names))
                for name in names[k:] + names[:k]:
                    i += 1
                    c = self.configs[name]
                    was_up = not c.error
                    rec = self.run_one(c, w, rnd)
                    self.runs.append(rec)
                    head = f"[{i}/{total}] {w.name} r{rnd} {name}:"
                    if was_up and c.error and not rec["error"].startswith("skipped"):
                        print(f"{head} FAILED: {rec['error']}", flush=True)
                    if was_up and c.error:
                        print(f"dstbench: {name} is out for the rest of the run: {c.error}",
                              flush=True)
                    elif rec["ok"]:
                        cpu = rec["server_cpu_us_per_io"]
                        print(f"{head} {rec['iops']:.0f} IOPS, {rec['bw_bytes'] / MIB:.1f} MiB/s, "
                              f"p50 {rec['p50_us']:.0f} µs, p99 {rec['p99_us']:.0f} µs, "
                              f"server {'?' if cpu is None else f'{cpu:.1f}'} µs CPU/IO",
                              flush=True)
                    elif not c.error:
                        print(f"{head} FAILED: {rec['error']}", flush=True)
                    save()


# ---------------------------------------------------------------------------
# Summary and report


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


SUMMARY_FIELDS = ["iops", "bw_bytes", "p50_us", "p99_us", "p999_us", "server_cpu_us_per_io",
                  "total_cpu_us_per_io", "server_hwm_kib", "members_hwm_kib", "client_cpu_pct"]


def summarize(res):
    base = res["meta"]["settings"].get("baseline", BASELINE)
    runs = res["runs"]
    by = {}
    for r in runs:
        by.setdefault((r["workload"], r["config"]), []).append(r)
    out = []
    for w in res["meta"]["settings"]["workloads"]:
        for c in res["meta"]["settings"]["configs"]:
            rs = by.get((w, c), [])
            ok = [r for r in rs if r["ok"]]
            s = {"workload": w, "config": c, "rounds_ok": len(ok), "rounds": len(rs)}
            for f in SUMMARY_FIELDS:
                s[f] = median([r.get(f) for r in ok])
            # Ratios to the baseline of the same round, then their median.
            base_by_round = {r["round"]: r for r in by.get((w, base), []) if r["ok"]}
            for f, key in (("iops", "iops_vs_base"), ("p99_us", "p99_vs_base"),
                           ("total_cpu_us_per_io", "cpu_vs_base")):
                ratios = []
                for r in ok:
                    b = base_by_round.get(r["round"])
                    if b and b.get(f) and r.get(f) is not None:
                        ratios.append(r[f] / b[f])
                s[key] = median(ratios)
            errors = sorted({r["error"] for r in rs if r["error"]})
            s["errors"] = errors
            out.append(s)
    return out


def fnum(x, digits=0, unit_div=1):
    if x is None:
        return "–"
    x = x / unit_div
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def fratio(x):
    return "–" if x is None else f"{x:.2f}×"


def describe(res):
    m = res["meta"]
    mach, st, tools, build = m["machine"], m["settings"], m["tools"], m["build"]
    mem = mach.get("mem_total_bytes")
    lines = [
        f"- Machine: {mach.get('cpu_model', '?')}, {mach['nproc']} CPUs "
        f"({mach['usable_cpus']} usable), {fnum(mem, 1, GIB) if mem else '?'} GiB RAM, "
        f"Linux {mach['kernel']}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in mach['loadavg_start'])}"
        + (f", at end {' '.join(f'{x:.2f}' for x in mach['loadavg_end'])}"
           if mach.get("loadavg_end") else ""),
        f"- Software: {tools.get('fio')}, {tools.get('nbdkit')}, "
        f"{tools.get('qemu-nbd', 'qemu-nbd not installed').split(' (')[0]}; "
        f"dst {build.get('type', '?')} build in {os.path.relpath(build['dir'], REPO)}"
        + (f" (commit {m['commit'][:12]}, working tree may differ)" if m.get("commit") else ""),
        f"- Settings: {st['rounds']} round(s) × {st['runtime']} s (+{st['ramp']} s ramp) per "
        f"configuration and workload, round-robin; members {fmt_size(st['size'])} on "
        f"{st['tmpfs']}; every export preconditioned with one sequential write pass"
        + (f"; slow members wait {st.get('delay_ms', 1)} ms per read and write"
           if any(c.endswith("-delay") for c in st.get("configs", [])) else "")
        + (f"; serve --workers {st['workers']}" if st.get("workers") is not None else "")
        + (f"; serve --threads {st['threads']}" if st.get("threads") is not None else "")
        + (" (quick mode: a smoke test, not a measurement)" if st.get("quick") else ""),
        f"- Started {m['started']}, finished {m.get('finished', '(not finished)')}; "
        f"status {m.get('status', '?')}",
    ]
    return lines


def markdown(res):
    summ = res["summary"]
    st = res["meta"]["settings"]
    base = st.get("baseline", BASELINE)
    cfgs = st["configs"]
    wls = st["workloads"]
    L = [f"## Results {res['meta']['started'][:10]}", ""]
    L += describe(res)
    L += ["", f"Values are medians over rounds. `×{base}` is the median over rounds of "
          f"the ratio to `{base}` measured in the same round. CPU is user+system time of "
          "the server under test (`srv`) and of it plus its members (`all`), per I/O, "
          "from the end of the ramp; RSS is the server's peak (VmHWM) during the run.", ""]
    get = {(s["workload"], s["config"]): s for s in summ}
    # Overview
    L += [f"### IOPS relative to {base}", "",
          "| config | " + " | ".join(wls) + " |",
          "|---|" + "---:|" * len(wls)]
    for c in cfgs:
        cells = []
        for w in wls:
            s = get.get((w, c))
            if not s or not s["rounds"]:
                cells.append("not run")
            elif not s["rounds_ok"]:
                cells.append("failed")
            elif c == base:
                cells.append(fnum(s["iops"]) + " IOPS")
            else:
                cells.append(fratio(s["iops_vs_base"]))
        L.append(f"| {c} | " + " | ".join(cells) + " |")
    L.append("")
    for w in wls:
        wd = res["workloads"].get(w, {}).get("description", "")
        L += [f"### {w}: {wd}", "",
              f"| config | IOPS | MiB/s | p50 µs | p99 µs | srv CPU µs/IO | all CPU µs/IO "
              f"| srv RSS MiB | IOPS ×{base} | p99 ×{base} | CPU ×{base} |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in cfgs:
            s = get.get((w, c))
            if not s or not s["rounds_ok"]:
                L.append(f"| {c} | {'failed' if s and s['rounds'] else 'not run'} "
                         "| | | | | | | | | |")
                continue
            flag = "" if s["rounds_ok"] == s["rounds"] else f" ({s['rounds_ok']}/{s['rounds']} rounds)"
            L.append(
                f"| {c}{flag} | {fnum(s['iops'])} | {fnum(s['bw_bytes'], 1, MIB)} | "
                f"{fnum(s['p50_us'], 1 if (s['p50_us'] or 0) < 100 else 0)} | "
                f"{fnum(s['p99_us'], 1 if (s['p99_us'] or 0) < 100 else 0)} | "
                f"{fnum(s['server_cpu_us_per_io'], 1)} | {fnum(s['total_cpu_us_per_io'], 1)} | "
                f"{fnum(s['server_hwm_kib'], 1, 1024)} | {fratio(s['iops_vs_base'])} | "
                f"{fratio(s['p99_vs_base'])} | {fratio(s['cpu_vs_base'])} |")
        L.append("")
    fails = []
    for c in cfgs:
        ci = res["configs"].get(c, {})
        if ci.get("error"):
            fails.append(f"- `{c}`: {ci['error']}")
    for s in summ:
        for e in s["errors"]:
            if not e.startswith("skipped: "):
                fails.append(f"- `{s['config']}` / `{s['workload']}`: {e}")
    if fails:
        L += ["### Failures", ""] + fails + [""]
    return "\n".join(L)


def write_csvs(res, resdir):
    run_fields = ["workload", "round", "config", "ok", "iops", "read_iops", "write_iops",
                  "bw_bytes", "p50_us", "p99_us", "p999_us", "mean_us", "ios",
                  "client_cpu_pct", "server_cpu_s", "members_cpu_s", "server_cpu_us_per_io",
                  "total_cpu_us_per_io", "server_hwm_kib", "members_hwm_kib", "error"]
    with open(os.path.join(resdir, "runs.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=run_fields, extrasaction="ignore")
        wr.writeheader()
        for r in res["runs"]:
            wr.writerow(r)
    sum_fields = (["workload", "config", "rounds_ok", "rounds"] + SUMMARY_FIELDS +
                  ["iops_vs_base", "p99_vs_base", "cpu_vs_base"])
    with open(os.path.join(resdir, "summary.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=sum_fields, extrasaction="ignore")
        wr.writeheader()
        for s in res["summary"]:
            wr.writerow(s)


def write_plot(res, resdir):
    """Writes plot.gp and its data; runs gnuplot if it is installed."""
    st = res["meta"]["settings"]
    base = st.get("baseline", BASELINE)
    cfgs, wls = st["configs"], st["workloads"]
    get = {(s["workload"], s["config"]): s for s in res["summary"]}
    panels = [("iops_vs_base", f"IOPS relative to {base}", False, "iops_ratio.dat"),
              ("p99_us", "p99 completion latency (µs, log scale)", True, "p99_us.dat"),
              ("total_cpu_us_per_io", "server + member CPU per I/O (µs, log scale)", True,
               "cpu_us_per_io.dat")]
    for key, _, _, fname in panels:
        with open(os.path.join(resdir, fname), "w") as f:
            f.write("workload " + " ".join(cfgs) + "\n")
            for w in wls:
                vals = []
                for c in cfgs:
                    s = get.get((w, c))
                    v = s.get(key) if s and s["rounds_ok"] else None
                    if key == "iops_vs_base" and c == base and s and s["rounds_ok"]:
                        v = 1.0
                    vals.append("-" if v is None or v <= 0 else f"{v:.6g}")
                f.write(w + " " + " ".join(vals) + "\n")
    have = shutil.which("gnuplot")
    term = "pngcairo"
    if have and subprocess.run(["gnuplot", "-e", "set terminal pngcairo"],
                               capture_output=True, timeout=10).returncode:
        term = "png"
    n = len(cfgs) + 1
    title = (f"dst NBD benchmarks {res['meta']['started'][:16]} — "
             f"{res['meta']['machine'].get('cpu_model', '')}, "
             f"{res['meta']['machine']['nproc']} CPUs"
             + (" (quick smoke run)" if st.get("quick") else ""))
    gp = [f"set terminal {term} size 1500,1300 noenhanced",
          "set output 'plot.png'",
          f"set multiplot layout 3,1 title \"{title}\"",
          "set style data histograms",
          "set style histogram clustered gap 1",
          "set style fill solid 0.85 border -1",
          "set boxwidth 0.9",
          "set datafile missing '-'",
          # Fixed margins keep the panels aligned; the key sits in the right one.
          "set lmargin at screen 0.07",
          "set rmargin at screen 0.85",
          "set key outside right top vertical",
          "set xtics nomirror font \",9\"",
          "set grid ytics"]
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
              "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"]
    for i, col in enumerate(colors, 1):
        gp.append(f"set linetype {i} lc rgb '{col}'")
    for i, (key, label, log, fname) in enumerate(panels):
        if i == 0:
            gp.append("set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5")
        else:
            gp.append("unset arrow 1")
            gp.append("unset key")
        gp.append("set logscale y" if log else "unset logscale y")
        gp.append("set yrange [*:*]" if log else "set yrange [0:*]")
        gp.append(f"set ylabel \"{label}\"")
        gp.append(f"plot for [i=2:{n}] '{fname}' using i:xtic(1) title columnheader(i)")
    gp.append("unset multiplot")
    with open(os.path.join(resdir, "plot.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    if not have:
        print("dstbench: gnuplot is not installed, so no plot.png; install it with\n"
              "  sudo apt-get install -y gnuplot-nox\n"
              f"and run: (cd {resdir} && gnuplot plot.gp)", file=sys.stderr)
        return None
    r = subprocess.run(["gnuplot", "plot.gp"], cwd=resdir, capture_output=True, text=True,
                       timeout=60)
    if r.returncode:
        print(f"dstbench: gnuplot failed: {r.stderr.strip()[-1000:]}", file=sys.stderr)
        return None
    return os.path.join(resdir, "plot.png")


def shown(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def report(res, resdir, quiet=False):
    res["summary"] = summarize(res)
    with open(os.path.join(resdir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_csvs(res, resdir)
    md = markdown(res)
    with open(os.path.join(resdir, "summary.md"), "w") as f:
        f.write(md + "\n")
    png = write_plot(res, resdir)
    if not quiet:
        print()
        print(md)
        print()
        print(f"dstbench: results in {shown(resdir)}/: results.json, runs.csv, "
              f"summary.csv, summary.md (paste into docs/benchmarks.md)"
              + (", plot.png" if png else "") + ", fio/, logs/")


# ---------------------------------------------------------------------------
# Main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="fio (nbd engine) against dst and other NBD servers on Unix sockets; "
                    "see bench/README.md.")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, 3 s runtime, 1 s ramp, 256M members "
                         "(explicit options still win)")
    ap.add_argument("--rounds", type=int, help="rounds per workload (default 3)")
    ap.add_argument("--runtime", type=int, help="seconds measured per run (default 10)")
    ap.add_argument("--ramp", type=int, help="fio ramp_time seconds per run (default 2)")
    ap.add_argument("--size", help="member size, e.g. 1G (default 1G; stripe members get "
                                   "a quarter each)")
    ap.add_argument("--workloads", nargs="+", metavar="W",
                    help="workloads, comma or space separated (default all)")
    ap.add_argument("--configs", nargs="+", metavar="C",
                    help="configurations, comma or space separated (default all)")
    ap.add_argument("--baseline", default=BASELINE,
                    help=f"the configuration ratios are taken to (default {BASELINE})")
    ap.add_argument("--delay-ms", type=int, default=DELAY_MS,
                    help="what the -delay configurations' members wait per read and write, "
                         f"in ms (default {DELAY_MS})")
    ap.add_argument("--workers", type=int, metavar="N",
                    help="dst-aggregator serve --workers N: threads for checksums and ciphers "
                         "(0: all on the event loop; default: the aggregator's, one per core)")
    ap.add_argument("--threads", type=int, metavar="N",
                    help="dst-aggregator serve --threads N: event loops for client connections "
                         "(default: the aggregator's, one per core)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"),
                    help="dst build directory (default build-bench/, configured as Release "
                         "if missing)")
    ap.add_argument("--no-build", action="store_true",
                    help="use the binaries in --build-dir as they are")
    ap.add_argument("--tmpdir", default="/dev/shm",
                    help="tmpfs directory for member files and sockets (default /dev/shm)")
    ap.add_argument("--out", help="results directory (default bench/results/<UTC time>)")
    ap.add_argument("--list", action="store_true", help="list configurations and workloads")
    ap.add_argument("--report", metavar="DIR",
                    help="only rebuild summary.md, CSVs and plot from DIR/results.json")
    a = ap.parse_args(argv)
    q = a.quick
    a.rounds = a.rounds if a.rounds is not None else (1 if q else 3)
    a.runtime = a.runtime if a.runtime is not None else (3 if q else 10)
    a.ramp = a.ramp if a.ramp is not None else (1 if q else 2)
    a.size = parse_size(a.size) if a.size else (256 * MIB if q else GIB)
    if a.rounds < 1 or a.runtime < 1 or a.ramp < 0:
        ap.error("--rounds and --runtime must be at least 1, --ramp at least 0")
    if a.size < 64 * MIB:
        ap.error("--size must be at least 64M")
    if a.delay_ms < 0:
        ap.error("--delay-ms must be at least 0")
    if a.workers is not None and a.workers < 0:
        ap.error("--workers must be at least 0")
    if a.threads is not None and a.threads < 1:
        ap.error("--threads must be at least 1")
    a.workload_names = split_names(a.workloads or ["all"], [w.name for w in WORKLOADS],
                                   "workload")
    a.config_names = split_names(a.configs or ["all"], list(CONFIGS), "configuration")
    if a.baseline not in CONFIGS:
        ap.error(f"unknown --baseline {a.baseline}")
    return a


def main(argv):
    a = parse_args(argv)
    if a.list:
        print("configurations:")
        for n, (d, _) in CONFIGS.items():
            print(f"  {n:15} {d}")
        print("workloads:")
        for w in WORKLOADS:
            print(f"  {w.name:20} {w.desc}")
        return 0
    if a.report:
        with open(os.path.join(a.report, "results.json")) as f:
            res = json.load(f)
        report(res, a.report)
        return 0

    check_tools(a.config_names)
    build = ensure_build(a)
    if a.baseline not in a.config_names:
        print(f"dstbench: note: baseline {a.baseline} is not selected: no ratios",
              file=sys.stderr)
    typ = fs_type(os.path.realpath(a.tmpdir))
    if typ != "tmpfs":
        print(f"dstbench: warning: {a.tmpdir} is {typ}, not tmpfs", file=sys.stderr)
    need = sum({"m0": a.size, "mem": a.size, "s0": a.size // 4, "s1": a.size // 4,
                "s2": a.size // 4, "s3": a.size // 4, "c-crc32c": a.size,
                "c-blake2b": a.size, "c-keyed": a.size, "c-enc": a.size}.get(m, 0)
               for m in {m for c in a.config_names for m in CONFIGS[c][1]} if m != "mem")
    vfs = os.statvfs(a.tmpdir)
    if vfs.f_bavail * vfs.f_frsize < need + 64 * MIB:
        sys.exit(f"dstbench: {a.tmpdir} has {vfs.f_bavail * vfs.f_frsize // MIB} MiB free, "
                 f"the members need {need // MIB} MiB; use a smaller --size")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    resdir = os.path.abspath(a.out or os.path.join(RESULTS, stamp + ("-quick" if a.quick else "")))
    os.makedirs(resdir, exist_ok=True)
    res = {
        "meta": {
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "status": "running",
            "machine": machine_info(),
            "tools": tool_versions(),
            "build": build,
            "commit": source_commit(),
            "command": ["bench/run.sh"] + argv,
            "settings": {"quick": a.quick, "rounds": a.rounds, "runtime": a.runtime,
                         "ramp": a.ramp, "size": a.size, "tmpfs": os.path.realpath(a.tmpdir),
                         "baseline": a.baseline, "delay_ms": a.delay_ms,
                         "workers": a.workers,
                         "threads": a.threads,
                         "workloads": a.workload_names,
                         "configs": a.config_names},
        },
        "workloads": {w: WORKLOADS_BY_NAME[w].as_dict() for w in a.workload_names},
        "configs": {},
        "runs": [],
    }
    print(f"dstbench: results go to {shown(resdir)}", flush=True)
    for line in describe(res)[:-1]:
        print("dstbench: " + line[2:], flush=True)

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    bench = None
    status = "error"
    try:
        bench = Bench(a, build, resdir)

        def save():
            res["configs"] = {n: c.as_dict() for n, c in bench.configs.items()}
            res["runs"] = bench.runs
            with open(os.path.join(resdir, "results.json"), "w") as f:
                json.dump(res, f, indent=1)

        bench.setup(a.config_names)
        save()
        if not any(not c.error for c in bench.configs.values()):
            print("dstbench: no configuration could be set up", file=sys.stderr)
        else:
            bench.run_all([WORKLOADS_BY_NAME[w] for w in a.workload_names], a.config_names,
                          save)
        status = "complete"
    except Interrupted as e:
        status = f"interrupted ({e})"
        print(f"\ndstbench: interrupted by {e}; stopping everything", file=sys.stderr)
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if bench:
            res["configs"] = {n: c.as_dict() for n, c in bench.configs.items()}
            res["runs"] = bench.runs
            bench.cleanup()
        res["meta"]["status"] = status
        res["meta"]["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        res["meta"]["machine"]["loadavg_end"] = list(os.getloadavg())
        try:
            report(res, resdir, quiet=status.startswith("interrupted") and not res["runs"])
            latest = os.path.join(RESULTS, "latest")
            if os.path.dirname(resdir) == RESULTS:
                if os.path.islink(latest):
                    os.unlink(latest)
                if not os.path.exists(latest):
                    os.symlink(os.path.basename(resdir), latest)
        except Exception as e:  # never lose the raw results to a report bug
            print(f"dstbench: writing the report failed: {e!r}", file=sys.stderr)
            with open(os.path.join(resdir, "results.json"), "w") as f:
                json.dump(res, f, indent=1)
            raise
    return 0 if status == "complete" else 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
