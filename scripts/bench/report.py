#!/usr/bin/env python3
"""Machine facts and docs/BENCHMARKS.md for scripts/bench/run.

  report.py meta OUT.json ROOT APP_COPY BUILD_DIR -- COMMAND...   (before the figures)
  report.py finish META.json                                      (right after them)
  report.py render RESULTS_DIR META.json OUT.md                   (then)

render also writes the gnuplot inputs scale_{start,reload,drain}.dat into RESULTS_DIR.
Every number in the document comes from RESULTS_DIR; a figure that failed is reported as
such instead of being left out silently.
"""
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys


def sh(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def first_line(text):
    return text.splitlines()[0] if text else "?"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def meta(out, root, app, build_dir, command):
    def git(*args):
        return sh(["git", "-C", root] + list(args))

    sha = hashlib.sha256(open(app, "rb").read()).hexdigest()
    build_type = "?"
    try:
        for line in open(os.path.join(build_dir, "CMakeCache.txt")):
            if line.startswith("CMAKE_BUILD_TYPE:"):
                build_type = line.split("=", 1)[1].strip()
    except OSError:
        pass
    try:
        porcelain = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        porcelain = ""
    dirty = [l[3:] for l in porcelain.splitlines() if len(l) > 3]
    m = {
        "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "started_epoch": datetime.datetime.now().timestamp(),
        "quick": os.environ.get("BENCH_QUICK") == "1",
        "quiet_max": 10 if os.environ.get("BENCH_QUICK") == "1" else 90,
        "command": command,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "os": sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": dirty,
        "app_sha256": sha[:16],
        "build_type": build_type,
        "build_dir": os.path.relpath(build_dir, root),
        "versions": {
            "g++": first_line(sh(["g++", "--version"])),
            "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
            "gunicorn": sh(["gunicorn", "--version"]),
            "python (gunicorn)": sh(["/usr/bin/python3", "--version"]),
            "wrk": first_line(sh(["wrk", "-v"])).split(" Copyright")[0],
            "hyperfine": sh(["hyperfine", "--version"]),
            "gnuplot": sh(["gnuplot", "--version"]),
        },
    }
    with open(out, "w") as f:
        json.dump(m, f, indent=1)


# ---------------------------------------------------------------------------------------
# formatting


def num(v, unit=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    a = abs(v)
    if a >= 1000:
        s = "{:,.0f}".format(v)
    elif a >= 100:
        s = "%.0f" % v
    elif a >= 10:
        s = "%.1f" % v
    elif a >= 1:
        s = "%.2f" % v
    else:
        s = "%.3f" % v
    return s + unit


def rng(summ, unit=""):
    """median (min-max)"""
    if not summ or summ.get("median") is None:
        return "-"
    if summ.get("n", 1) <= 1 or summ["min"] == summ["max"]:
        return num(summ["median"], unit)
    return "%s (%s-%s)" % (num(summ["median"], unit), num(summ["min"]), num(summ["max"]))


def summ(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"n": len(vals), "median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def xr(v):
    return "-" if v is None else ("%.2fx" % v if v < 10 else "%.1fx" % v)


def pct(v):
    return "-" if v is None else "%+.1f%%" % (v * 100)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


NAMES = {"systempp": "systempp", "systempp-exec": "systempp, `--reload-mode exec`", "nginx": "nginx",
         "gunicorn": "gunicorn"}


# ---------------------------------------------------------------------------------------


def render(results, meta_path, out_md):
    meta_ = json.load(open(meta_path))
    # the end of the measurements (written by `report.py finish`), so rendering again later changes nothing
    meta_.setdefault("loadavg_end", open("/proc/loadavg").read().split()[:3])
    meta_["elapsed_s"] = meta_.get("finished_epoch", datetime.datetime.now().timestamp()) - meta_["started_epoch"]

    def load(name):
        try:
            return json.load(open(os.path.join(results, name + ".json")))
        except (OSError, ValueError):
            return None

    f1, f2, f3, f4 = load("f1_coldstart"), load("f2_reload"), load("f3_failures"), load("f4_throughput")
    f5, f7, f8, tl = load("f5_idle_memory"), load("f7_scale"), load("f8_respawn"), load("timeline")
    failed_figs = []
    try:
        failed_figs = [l.strip() for l in open(os.path.join(results, "FAILED")) if l.strip()]
    except OSError:
        pass
    quick = meta_.get("quick", False)
    ncpu = meta_["nproc"]
    targets = []  # (target, measured, met, note)
    doc = []
    w = doc.append

    elapsed = meta_.get("elapsed_s")
    w("# Benchmarks: systempp, gunicorn and nginx, side by side")
    w("")
    w("Generated by `%s` on %s%s. Every figure below comes from that one run on one machine; "
      "run the same command to reproduce them (it installs what it needs, builds, measures, "
      "and rewrites this file and the plots in `docs/bench/`)." %
      (meta_["command"], meta_["started_utc"], " in %d min %d s" % divmod(int(elapsed), 60) if elapsed else ""))
    if quick:
        w("")
        w("> **This is a `--quick` run** (short durations, few repetitions): for development, not for quoting.")
    w("")
    w("## Machine and versions")
    w("")
    v = meta_["versions"]
    dirty = meta_["git_dirty"]
    w(table(["what", "value"], [
        ["CPU", "%s, **%d cores** (`nproc`)" % (meta_["cpu_model"], ncpu)],
        ["memory, OS, kernel", "%s GiB, %s, Linux %s" % (meta_["mem_gib"], meta_["os"], meta_["kernel"])],
        ["load average (1, 5, 15 min) at start / end", "%s / %s" % (" ".join(meta_["loadavg_start"]),
                                                                   " ".join(meta_.get("loadavg_end", ["?"])))],
        ["systempp", "commit %s%s; `%s/app/app`, CMake build type **%s** (the default of `scripts/setup`: -O2 -g), "
                     "sha256 %s..., copied before the run" %
         (meta_["git_commit"], " plus uncommitted changes to %d files (%s)" % (len(dirty), ", ".join("`%s`" % d for d in dirty)) if dirty else "",
          meta_["build_dir"], meta_["build_type"], meta_["app_sha256"])],
        ["compiler", v["g++"]],
        ["nginx", "%s (Debian `nginx-light`), `return 200 \"hello\"`, no access log" % v["nginx"]],
        ["gunicorn", "%s, sync workers, %s, `hello_wsgi.py`" % (v["gunicorn"], v["python (gunicorn)"])],
        ["load and timing tools", "%s, %s, %s" % (v["wrk"], v["hyperfine"], v["gnuplot"])],
    ]))
    w("")
    w("**What 2 cores mean here.** The load generator (wrk, or the Python client) runs on the same "
      "machine and needs a core of its own to push a server hard, so in the throughput runs each server "
      "gets about one core: 8 workers are 4 runnable processes per core for the pool alone, and more than "
      "one or two workers cannot add throughput, only scheduling. \"8 workers\" therefore measures how well "
      "each runtime copes with being oversubscribed (wake-ups, context switches, how connections are "
      "spread), not how it scales. To measure the runtime's own overhead without that noise, figure 4 "
      "also pins the server to core 1 and wrk to core 0. Other processes on the machine (compilers, "
      "tests) can disturb a run: the load average above says how busy it was; runs are interleaved "
      "(A B C A B C ...) so a disturbance hits every server alike, and medians are reported.")
    w("")
    loads = []
    for name, label in (("f1_coldstart", "1"), ("f2_reload", "2"), ("f3_failures", "3"), ("f4_throughput", "4"),
                        ("f5_idle_memory", "5, 6"), ("f7_scale", "7"), ("f8_respawn", "8"), ("timeline", "latency plot")):
        d = load(name)
        if d and d.get("loadavg_end"):
            loads.append("%s: %s" % (label, d["loadavg_end"][0]))
    quiet_ = load("quiet") or {}
    interf = load("interference") or {}
    retried = []
    try:
        retried = [l.strip() for l in open(os.path.join(results, "RETRIED")) if l.strip()]
    except OSError:
        pass
    if loads:
        w("Load average (1 min) at the end of each figure: %s. Anything well above 0 is other work on the "
          "machine competing with the servers and the load generator." % "; ".join(loads))
        w("")
    if interf:
        w("Share of the machine's CPU used by other people's processes while each figure ran (machine busy "
          "time minus this run's own process tree): %s.%s" %
          ("; ".join("%s %.0f%%" % (k, v["foreign_cpu"] * 100) for k, v in interf.items()),
           " Figures run a second time because the first try was disturbed (over 25%%): %s." % ", ".join(retried)
           if retried else ""))
        w("")
    if quiet_:
        noisy = ["%s (%.0f%% idle after %.0f s)" % (k, v["idle_last"] * 100, v["waited_s"]) for k, v in quiet_.items() if not v["quiet"]]
        w("Before each figure the run waits, up to %s s (%s s in all), for the machine to be at least 85%% "
          "idle for two seconds. %s" % (meta_.get("quiet_max", "90"), "30" if quick else "240",
                           "Every figure started on a quiet machine." if not noisy else
                           "Figures that started on a busy machine anyway: %s." % ", ".join(noisy)))
        w("")
    if failed_figs:
        w("**Figures that failed in this run:** %s (see the run's log)." % ", ".join(failed_figs))
        w("")

    # ---------------------------------------------------------------- targets (filled below)
    targets_at = len(doc)
    w("")

    w("## How it is measured")
    w("")
    w("* Each server runs on its own loopback port, in its own process group and temp directory, "
      "with the same worker count: systempp `build/app/app --workers N` (the demo: Boost.Beast, `GET /` "
      "answers `hello`), gunicorn `-w N --worker-class sync` with a hello WSGI app, nginx-light "
      "`worker_processes N` with `return 200 \"hello\"` (non-daemon, own prefix, pid file and error log). "
      "All three answer `GET /` with a 5-byte body.")
    w("* **Up** means: systempp: the master's `READY=1` on `NOTIFY_SOCKET` (sent once every worker is "
      "READY; the run checks with `app status --json` that all workers show `ready` then), and per worker "
      "the master's `worker[k] pid P gG ready` log line; gunicorn: its `post_worker_init` hook (the worker "
      "has loaded the app), reported as a datagram by `gunicorn_conf.py`; nginx has no readiness signal: "
      "a worker counts as up when the master logs `start worker process P` (at notice level), i.e. once "
      "forked. **Serving** additionally requires a `200` to a fresh `GET /`.")
    w("* **Gone** means the process has terminated (a pidfd became readable), zombie or reaped.")
    w("* The observer never polls: it blocks in `poll()` on the notify socket, on inotify for the log "
      "files and on pidfds, and stamps events with `CLOCK_MONOTONIC` (resolution: microseconds).")
    w("* **Reload** is timed from the SIGHUP to the moment the last old worker is gone *and* N new "
      "workers are up (systempp: also its `READY=1` after `RELOADING=1`). **Drain** is SIGTERM "
      "(nginx: SIGQUIT, its graceful stop; SIGTERM is nginx's fast stop) to every process of the pool "
      "gone. **Respawn** is SIGKILL of one worker to its replacement being up.")
    w("* wrk: `-t2 -c32 --latency --timeout 2s` (pinned runs: `-t1` on core 0), keep-alive, or with "
      "`-H 'Connection: close'` for one connection per request. A failed request is any socket error wrk "
      "reports (connect, read, write, timeout) or a non-2xx/3xx status. wrk's latency excludes the "
      "TCP handshake. gunicorn's sync workers do not do keep-alive (they answer `Connection: close`), so "
      "its keep-alive rows are really one connection per request. nginx runs with "
      "`keepalive_requests 1000000` so that it does not close wrk's connections every 1000 requests.")
    w("* Server CPU per request and wake-ups per request: utime+stime from `/proc/PID/task/*/schedstat` "
      "and voluntary context switches from `/proc/PID/task/*/status`, summed over the master and the "
      "workers, before and after each wrk run.")
    w("* Medians with min-max over the repetitions; ratios compare medians.")
    w("")

    # ---------------------------------------------------------------- 1 cold start
    w("## 1. Cold start, %s workers" % (f1["workers"] if f1 else 8))
    w("")
    sp_start = None
    if f1:
        s = f1["summary"]
        sp = s["systempp"]["serving_ms"]["median"]
        sp_start = sp
        rows = []
        for k in ("systempp", "systempp-exec", "nginx", "gunicorn"):
            if k not in s:
                continue
            r = s[k]
            rows.append([NAMES[k], rng(r["ready_ms"], " ms"), rng(r["serving_ms"], " ms"),
                         "-" if k == "systempp" else xr(ratio(r["serving_ms"]["median"], sp))])
        w("Launch (fork+exec of the server) to every worker up, and to the first `200`; %d runs each, "
          "interleaved." % s["systempp"]["serving_ms"]["n"])
        w("")
        w(table(["server", "launch to all workers up", "launch to first 200", "peer ÷ systempp (first 200)"], rows))
        w("")
        w("`app status --json` showed every worker `ready` right after each `READY=1`: %s." %
          ("yes" if f1.get("status_all_ready_after_READY") else "**no**"))
        targets.append(("cold start of 8 workers under 50 ms", "%s ms (median; max %s ms)" %
                        (num(sp), num(s["systempp"]["serving_ms"]["max"])), sp < 50,
                        "" if sp < 50 else "over by %s ms" % num(sp - 50)))
    else:
        w("Not measured (the figure failed).")
    w("")

    # ---------------------------------------------------------------- 2 reload
    w("## 2. Rolling reload, %s workers" % (f2["workers"] if f2 else 8))
    w("")
    if f2:
        s = f2["summary"]
        sp = s["systempp"]["total_ms"]["median"]
        rows = []
        for k in ("systempp", "systempp-exec", "nginx", "gunicorn"):
            r = s[k]
            rows.append([NAMES[k], rng(r["total_ms"], " ms"), rng(r["new_up_ms"], " ms"),
                         rng(r["internal_ms"], " ms") if r["internal_ms"]["n"] else "-",
                         "-" if k == "systempp" else xr(ratio(r["total_ms"]["median"], sp))])
        w("SIGHUP to the last old worker gone with %d new workers up; %d reloads each, interleaved, "
          "idle pool." % (f2["workers"], s["systempp"]["total_ms"]["n"]))
        w("")
        w(table(["server", "HUP to done", "HUP to all new up", "systempp's own figure (`status --json`)",
                 "peer ÷ systempp"], rows))
        w("")
        w("systempp replaces one slot at a time (`--reload-surge 1`): a new worker must be READY before the "
          "old one in its slot drains, so its reload time is the sum of N start-and-drain steps. nginx "
          "starts all new workers at once, then sleeps a fixed 100 ms (\"allow new processes to start\", "
          "`ngx_master_process_cycle`) before it tells the old ones to quit, hence its ~100 ms floor. "
          "gunicorn forks all new workers, then sends SIGTERM to the old ones at once, without waiting "
          "for the new ones to load the app.")
        hf = f2.get("hyperfine")
        if hf:
            w("")
            w("Whole commands with hyperfine (`-N`, %d runs, 1 warm-up), against the same 8-worker pool:" %
              hf["reload_wait"]["runs"])
            w("")
            w(table(["command", "median", "min-max"], [
                ["`app reload --wait`", num(hf["reload_wait"]["median_ms"], " ms"),
                 "%s-%s ms" % (num(hf["reload_wait"]["min_ms"]), num(hf["reload_wait"]["max_ms"]))],
                ["`app status --json`", num(hf["status_json"]["median_ms"], " ms"),
                 "%s-%s ms" % (num(hf["status_json"]["min_ms"]), num(hf["status_json"]["max_ms"]))]]))
        targets.append(("reload of 8 trivial workers under 100 ms", "%s ms (median; max %s ms)" %
                        (num(sp), num(s["systempp"]["total_ms"]["max"])), sp < 100,
                        "" if sp < 100 else "over by %s ms" % num(sp - 100)))
    else:
        w("Not measured (the figure failed).")
    w("")

    # ---------------------------------------------------------------- 3 failures
    w("## 3. Failed requests across reloads, scaling, a killed and a stopped worker, under load")
    w("")
    if f3:
        servers3 = f3.get("servers") or ["systempp", "nginx", "gunicorn"]

        def name3(label):
            if label.startswith("systempp"):
                return "systempp `--accept %s`" % (label.split("-", 1)[1] if "-" in label else "reuseport")
            return NAMES.get(label, label)

        def errors(r):
            return "%d / %d / %d / %d / %d" % (r["connect"], r["read"], r["write"], r["timeout"], r["status"])

        w("wrk with %d connections for the whole series; %d reloads, one every ~%s s after the previous one "
          "finished (the reload time under load is in the last column); %d workers." %
          (f3["conns"], f3["reloads"], "0.5", f3["workers"]))
        w("")
        rows = []
        for mode in ("keepalive", "close"):
            for k in servers3:
                r = f3["runs"].get("%s/%s" % (k, mode))
                if not r:
                    continue
                rate = r["failed"] / r["requests"] if r["requests"] else None
                rows.append(["%s, %s" % (name3(k), "keep-alive" if mode == "keepalive" else "connection: close"),
                             "{:,}".format(r["requests"]), "**%d**" % r["failed"], errors(r),
                             "%.4f%%" % (rate * 100) if rate is not None else "-", "%d" % r["reloads"],
                             rng(r["reload_ms"], " ms")])
        w(table(["server, load", "requests", "failed", "connect / read / write / timeout / non-2xx",
                 "failure rate", "reloads", "reload time under load"], rows))
        w("")
        events = f3.get("events") or {}
        if events:
            half = "%d -> %d -> %d" % (f3["workers"], f3["workers"] // 2, f3["workers"])
            w("The same servers, one event per wrk run (1 s of load before it, 0.5 s after): **scale** "
              + half + " with `app scale` (systempp only), **kill** one worker with SIGKILL and wait for "
              "its replacement, **stop** one worker with SIGSTOP for 1 s under connection-close load (the "
              "known weakness of `SO_REUSEPORT`: the connections queued on the stopped worker's socket wait "
              "for it). Latency is wrk's over the whole run.")
            w("")
            rows = []
            for ev, ev_name in (("scale", "scale " + half), ("kill", "SIGKILL a worker"), ("stop", "SIGSTOP a worker 1 s")):
                for mode in ("keepalive", "close"):
                    for k in servers3:
                        r = events.get("%s/%s/%s" % (k, mode, ev))
                        if not r:
                            continue
                        held = (r.get("event") or {}).get("victim_connections")
                        rows.append([ev_name, "%s, %s" % (name3(k), "keep-alive" if mode == "keepalive" else "close"),
                                     "{:,}".format(r["requests"]), "**%d**" % r["failed"], errors(r),
                                     "-" if held is None else "%d" % held,
                                     num(r["lat_p99_us"] / 1000.0, " ms"), num(r["lat_max_us"] / 1000.0, " ms")])
            w(table(["event", "server, load", "requests", "failed", "connect / read / write / timeout / non-2xx",
                     "victim's connections", "p99 latency", "max latency"], rows))
            w("")
            w("The victim of kill and stop is the worker that used the most CPU in the 0.3 s before, and "
              "\"victim's connections\" the established connections it held then: a worker that served "
              "nothing would make any server look good. wrk corrects its latencies for coordinated "
              "omission (a request stuck for 1 s also counts the requests its connection could not send "
              "meanwhile), so one request that waits out the stop is enough to put p99 near 1 s.")
            w("")
        for k in [x for x in servers3 if x.startswith("systempp")]:
            for mode, label in (("keepalive", "keep-alive"), ("close", "connection-close")):
                half = "%d -> %d -> %d" % (f3["workers"], f3["workers"] // 2, f3["workers"])
                for ev, what in (("reloads", "%d reloads" % f3["reloads"]), ("scale", "scale " + half),
                                 ("kill", "")):
                    r = f3["runs"].get("%s/%s" % (k, mode)) if ev == "reloads" else events.get("%s/%s/%s" % (k, mode, ev))
                    if not r:
                        continue
                    if ev == "kill":
                        # What the killed worker held is lost with it: the target is nothing beyond
                        # that. Under connection-close load a snapshot of what it held is ~0 (each
                        # connection lives for microseconds) while the kill still takes the few in
                        # its hands, with every server: that row is in the table, not a target.
                        if mode == "close":
                            continue
                        held = (r.get("event") or {}).get("victim_connections") or 0
                        targets.append(("no failed request beyond the killed worker's own connections, %s load, %s" %
                                        (label, name3(k)), "%d failed, it held %d" % (r["failed"], held),
                                        r["failed"] <= held, ""))
                        continue
                    targets.append(("zero failed requests across %s, %s load, %s" % (what, label, name3(k)),
                                    "%d failed of %s" % (r["failed"], "{:,}".format(r["requests"])), r["failed"] == 0,
                                    "" if r["failed"] == 0 else "%d failures (%.4f%%)" % (r["failed"], 100.0 * r["failed"] / r["requests"])))
        ng = f3["runs"].get("nginx/keepalive")
        if ng and ng["failed"]:
            w("nginx's keep-alive failures are its known behaviour: on reload the old workers close idle "
              "keep-alive connections at once, and a request the client sent at that moment gets a reset "
              "or an empty read (wrk's `read` errors). systempp's draining workers instead finish the "
              "request in flight, answer the next one with `Connection: close`, and close an idle "
              "connection only after `drain_grace_ms`.")
            w("")
        if any(r["failed"] for key, r in events.items() if key.endswith("/kill")):
            w("A SIGKILLed worker takes its open connections with it: a request in flight on one of them, "
              "or sent on a keep-alive connection before the client saw the close, fails (wrk's `read` "
              "errors) with every server; no server can answer for a process that is gone. Under "
              "connection-close load these are the few connections the worker had accepted and not yet "
              "answered at the instant of the kill (a snapshot just before it finds none: each lives for "
              "microseconds); what waits in the listen queue is not lost.")
            w("")
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- 4 throughput
    w("## 4. Throughput of `GET /`")
    w("")
    if f4:
        def med(key, field, where="runs"):
            runs = f4[where].get(key)
            return summ([r[field] for r in runs]) if runs else None

        w("wrk `-t2 -c%d -d%ds --latency`, %d runs of each configuration, interleaved (A B C D A B C D ...); "
          "every server runs all the time, idle while the others are measured. Latency is the median of "
          "the runs' p50/p99." % (f4["conns"], f4["seconds"], f4["reps"]))
        w("")
        configs = [("systempp-8", "systempp, 8 workers"), ("systempp-8-exclusive", "systempp, 8 workers, `--accept exclusive`"),
                   ("systempp-8-shared", "systempp, 8 workers, `--accept shared`"), ("nginx-8", "nginx, 8 workers"),
                   ("gunicorn-8", "gunicorn, 8 workers"), ("systempp-inline", "systempp, `--workers 0`")]
        rows = []
        for mode in ("keepalive", "close"):
            for key, label in configs:
                k = "%s/%s" % (key, mode)
                if k not in f4["runs"]:
                    continue
                rps = med(k, "rps")
                fails = sum(r["failed"] for r in f4["runs"][k])
                rows.append(["%s, %s" % (label, "keep-alive" if mode == "keepalive" else "close"), rng(rps),
                             num(med(k, "lat_p50_us")["median"] / 1000, " ms"), num(med(k, "lat_p99_us")["median"] / 1000, " ms"),
                             num(med(k, "server_cpu_us_per_req")["median"], " µs"), num(med(k, "server_wakeups_per_req")["median"]),
                             str(fails)])
        w(table(["configuration", "requests/s", "p50", "p99", "server CPU / request", "server wake-ups / request",
                 "failed"], rows))
        w("")
        # failed requests in the throughput runs: say when, and how the other servers fared in that round
        for k, runs in f4["runs"].items():
            for i, r in enumerate(runs):
                if not r["failed"]:
                    continue
                others = [(k2, rs[i]["lat_max_us"]) for k2, rs in f4["runs"].items()
                          if k2.split("/")[0] != k.split("/")[0] and i < len(rs)]
                worst = max(others, key=lambda x: x[1]) if others else None
                w("Run %d of `%s` had %d failed requests (%d connect, %d read, %d write, %d timeout, %d non-2xx) at "
                  "%s requests/s against a median of %s.%s" %
                  (i + 1, k, r["failed"], r["connect"], r["read"], r["write"], r["timeout"], r["status"],
                   "{:,.0f}".format(r["rps"]), "{:,.0f}".format(statistics.median(x["rps"] for x in runs)),
                   " In the same round every configuration saw its worst latency (e.g. `%s`: %s ms max), so the "
                   "machine stalled then (other work on it); a single process (`--workers 0`) stalls as a whole, "
                   "and wrk's 2 s timeout fired on its connections." % (worst[0], num(worst[1] / 1000.0))
                   if worst and worst[1] > 100000 else ""))
                w("")
        rr = {}
        for mode in ("keepalive", "close"):
            sp = med("systempp-8/%s" % mode, "rps")
            ng = med("nginx-8/%s" % mode, "rps")
            gu = med("gunicorn-8/%s" % mode, "rps")
            rr[mode] = (ratio(sp["median"], ng["median"]) if sp and ng else None,
                        ratio(sp["median"], gu["median"]) if sp and gu else None)
        # fairness: requests per worker during each run, the busiest over the idlest
        frows = []
        worst_default = None
        for key, label in (("systempp-8", "reuseport (default)"), ("systempp-8-exclusive", "exclusive"),
                           ("systempp-8-shared", "shared")):
            cells = [label]
            for mode in ("keepalive", "close"):
                runs = f4["runs"].get("%s/%s" % (key, mode), [])
                vals = [r.get("fairness") for r in runs if "per_worker_requests" in r]
                if not vals:
                    cells.append("-")
                    continue
                if any(v is None for v in vals):
                    cells.append("a worker served none")
                    v = float("inf")
                else:
                    v = statistics.median(vals)
                    cells.append("%.2f" % v)
                if key == "systempp-8":
                    worst_default = v if worst_default is None else max(worst_default, v)
            frows.append(cells)
        if any(c != "-" for row in frows for c in row[1:]):
            w("**Fairness** (requests per worker during a run, the busiest worker over the idlest; median "
              "of the runs; 8 workers, the 32 connections above):")
            w("")
            w(table(["`--accept`", "keep-alive", "connection: close"], frows))
            w("")
            if worst_default is not None:
                targets.append(("fairness: requests per worker, max over min, at most 1.5 under both loads",
                                "%s (worse of the two loads)" % ("a worker served none" if worst_default == float("inf")
                                                                 else "%.2f" % worst_default),
                                worst_default <= 1.5, "" if worst_default <= 1.5 else "over by %s" %
                                ("-" if worst_default == float("inf") else "%.2f" % (worst_default - 1.5))))
        w(table(["ratio (medians)", "keep-alive", "connection: close"], [
            ["systempp-8 ÷ nginx-8", xr(rr["keepalive"][0]), xr(rr["close"][0])],
            ["systempp-8 ÷ gunicorn-8", xr(rr["keepalive"][1]), xr(rr["close"][1])]]))
        w("")
        if rr["keepalive"][0] is not None:
            targets.append(("keep-alive throughput at least nginx's", "%s of nginx" % xr(rr["keepalive"][0]),
                            rr["keepalive"][0] >= 1.0, "" if rr["keepalive"][0] >= 1 else
                            "short by %.0f%%" % ((1 - rr["keepalive"][0]) * 100)))
        if rr["close"][0] is not None:
            targets.append(("connection-close throughput at least 0.95x nginx's", "%s of nginx" % xr(rr["close"][0]),
                            rr["close"][0] >= 0.95, "" if rr["close"][0] >= 0.95 else
                            "short by %.0f%% of nginx (%.0f%% below the target)" %
                            ((1 - rr["close"][0]) * 100, (1 - rr["close"][0] / 0.95) * 100)))
        g = [x for x in (rr["keepalive"][1], rr["close"][1]) if x is not None]
        if g:
            targets.append(("at least 5x gunicorn", "keep-alive %s, close %s" % (xr(rr["keepalive"][1]), xr(rr["close"][1])),
                            min(g) >= 5, "" if min(g) >= 5 else "lowest ratio %s" % xr(min(g))))

        herd = f4.get("herd")
        if herd and herd.get("systempp-8"):
            woken = herd["systempp-8"]["workers_woken_per_conn"]
            targets.append(("workers woken per connection on an idle pool at most 1.3 (nginx 1.2)",
                            "%s of %d" % (num(woken), herd["systempp-8"]["workers"]), woken <= 1.3,
                            "" if woken <= 1.3 else "%.1f too many" % (woken - 1.3)))
        if herd:
            w("**Wake-ups per connection on an idle pool** (%d sequential connection-close `GET /`, 2 ms "
              "apart; voluntary context switches of all workers): one connection should wake one worker "
              "(about two wake-ups: the request, then the client's FIN); a thundering herd wakes every "
              "idle worker." % herd["systempp-8"]["connections"])
            w("")
            rows = []
            for key, label in (("systempp-8", "systempp (reuseport)"), ("systempp-8-exclusive", "systempp, exclusive"),
                               ("systempp-8-shared", "systempp, shared"), ("nginx-8", "nginx"), ("gunicorn-8", "gunicorn")):
                h = herd.get(key)
                if h:
                    rows.append([label, num(h["worker_wakeups_per_conn"]), "%s of %d" % (num(h["workers_woken_per_conn"]), h["workers"]),
                                 num(h["master_wakeups_per_conn"]), describe_regs(h.get("listener_registrations"), key)])
            w(table(["8 workers", "worker wake-ups / connection", "workers woken / connection",
                     "master wake-ups / connection", "the listener in a worker's epoll instances (`/proc/PID/fdinfo`)"], rows))
            w("")
            pr = f4.get("epoll_probe")
            if pr:
                w("Kernel check (`scripts/bench/epoll_probe.py`, this kernel): %d processes each add a listener to "
                  "an epoll instance with `EPOLLEXCLUSIVE`; %d connections. Waiting directly on that instance: "
                  "%s wake-ups per connection; waiting on an outer epoll that watches it (a nested epoll, as when "
                  "the instance is handed to Asio's reactor): %s. The kernel counts an exclusive wake-up as "
                  "delivered only when a task sleeps in `epoll_wait` on that very instance; a nested one has "
                  "none, so the wake-up goes on to every waiter." %
                  (pr["direct"]["children"], pr["direct"]["connections"], num(pr["direct"]["wakeups_per_conn"]),
                   num(pr["nested"]["wakeups_per_conn"])))
                w("")

        pin = f4.get("pinned") or {}
        if pin:
            w("**Per core: the runtime's overhead.** The server pinned to core 1 (`taskset -c 1`, workers "
              "inherit it), wrk `-t1 -c%d` pinned to core 0, %d runs of %d s each, interleaved. The baseline "
              "is the same app in one process (`--workers 0`). Overhead is measured per core: requests per "
              "second of server CPU time (1 / server CPU per request), so it does not depend on how much of a "
              "core the server got from the scheduler, from wrk or from whatever else ran on the machine; "
              "requests/s on the pinned core are shown as a cross-check (they move with that noise)."
              % (f4["conns"], len(next(iter(pin.values()))), f4.get("pin_seconds", 0)))
            w("")
            rows = []
            base = {}
            for mode in ("keepalive", "close"):
                b = med("systempp-inline/%s" % mode, "rps", "pinned")
                bc = med("systempp-inline/%s" % mode, "server_cpu_us_per_req", "pinned")
                base[mode] = (b, bc)
                for key, label in (("systempp-inline", "systempp `--workers 0`"), ("systempp-1", "systempp, 1 worker"),
                                   ("systempp-8", "systempp, 8 workers"), ("nginx-8", "nginx, 8 workers")):
                    k = "%s/%s" % (key, mode)
                    if k not in pin:
                        continue
                    r = med(k, "rps", "pinned")
                    c = med(k, "server_cpu_us_per_req", "pinned")
                    rows.append(["%s, %s" % (label, "keep-alive" if mode == "keepalive" else "close"),
                                 num(c["median"], " µs"), "{:,.0f}".format(1e6 / c["median"]),
                                 "-" if key == "systempp-inline" or not bc else pct(1 - bc["median"] / c["median"]),
                                 rng(r), "-" if key == "systempp-inline" or not b else pct(r["median"] / b["median"] - 1),
                                 num(med(k, "server_wakeups_per_req", "pinned")["median"])])
            w(table(["one core", "server CPU / request", "requests per CPU-second",
                     "overhead vs `--workers 0` (per core)", "requests/s", "requests/s vs `--workers 0`",
                     "wake-ups / request"], rows))
            w("")
            ovs = {}
            for mode in ("keepalive", "close"):
                bc = base[mode][1]
                for key in ("systempp-1", "systempp-8"):
                    c = med("%s/%s" % (key, mode), "server_cpu_us_per_req", "pinned")
                    if bc and c:
                        ovs[(key, mode)] = 1 - bc["median"] / c["median"]
            for key, label in (("systempp-1", "one worker per core"), ("systempp-8", "8 workers on one core (8x oversubscribed)")):
                a, b = ovs.get((key, "keepalive")), ovs.get((key, "close"))
                if a is None or b is None:
                    continue
                worst = max(a, b)
                targets.append(("runtime overhead vs `--workers 0` scaled by cores under 2%%: %s" % label,
                                "keep-alive %s, close %s (CPU per request)" % (pct(a), pct(b)), worst < 0.02,
                                "" if worst < 0.02 else "%.1f points over" % ((worst - 0.02) * 100)))
        aff = f4.get("affinity") or {}
        if aff.get("systempp-cpus/keepalive") and aff.get("systempp-cpus-affinity/keepalive"):
            w("**CPU affinity.** One worker per CPU (%d), with `--cpu-affinity auto` (worker k pinned to "
              "CPU k) and without (the scheduler places them), the same wrk runs as above on the same "
              "cores, interleaved. Pinning keeps a worker's caches and its socket's softirq work on one "
              "CPU; wrk shares those CPUs here, so the difference is small and partly noise." % f4["ncpu"])
            w("")
            rows = []
            for mode, label in (("keepalive", "keep-alive"), ("close", "connection close")):
                a = med("systempp-cpus-affinity/%s" % mode, "rps", "affinity")
                b = med("systempp-cpus/%s" % mode, "rps", "affinity")
                la = med("systempp-cpus-affinity/%s" % mode, "lat_p99_us", "affinity")
                lb = med("systempp-cpus/%s" % mode, "lat_p99_us", "affinity")
                rows.append([label, rng(a), rng(b), xr(a["median"] / b["median"]) if a and b and b["median"] else "-",
                             num(la["median"] / 1000, " ms") if la else "-", num(lb["median"] / 1000, " ms") if lb else "-"])
            w(table(["%d workers" % f4["ncpu"], "requests/s, pinned", "requests/s, not pinned", "pinned ÷ not pinned",
                     "p99, pinned", "p99, not pinned"], rows))
            w("")
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- 5, 6 idle and memory
    w("## 5. Master idle CPU and wake-ups")
    w("")
    if f5:
        w("8 workers, after a 2 s warm-up load, then %d s with no traffic; scaled to one minute. CPU from "
          "`/proc/PID/stat` (utime+stime, in %d ms ticks) and from schedstat (ns); wake-ups are voluntary "
          "context switches (`/proc/PID/status`)." % (f5["idle_seconds"], 1000 // f5["clk_tck"]))
        w("")
        rows = []
        for k in ("systempp", "nginx", "gunicorn"):
            r = f5["idle"].get(k)
            if not r:
                continue
            rows.append([NAMES[k], num(r["master_cpu_ms_per_min_ticks"], " ms"), num(r["master_cpu_ms_per_min"], " ms"),
                         num(r["master_wakeups_per_min"]), rng(r["worker_cpu_ms_per_min"], " ms"),
                         rng(r["worker_wakeups_per_min"])])
        w(table(["server", "master CPU / min (ticks)", "master CPU / min (schedstat)", "master wake-ups / min",
                 "worker CPU / min", "worker wake-ups / min"], rows))
        w("")
        r = f5["idle"].get("systempp")
        if r:
            w("systempp's master wakes once a second (its supervision tick: heartbeat checks every "
              "`--heartbeat-timeout`/4, at most 1 s) and each worker once a second (its heartbeat timer). "
              "nginx sleeps in `sigsuspend` until a signal; gunicorn's arbiter wakes every second "
              "(`select` with a 1 s timeout) and its sync workers every `--timeout`/2 = 15 s.")
            w("")
            cpu = r["master_cpu_ms_per_min"]
            targets.append(("master idle CPU under 10 ms per minute", "%s ms/min" % num(cpu), cpu < 10,
                            "" if cpu < 10 else "over by %s ms" % num(cpu - 10)))
            wk = r["worker_wakeups_per_min"]["max"] or 0
            busy = r["master_wakeups_per_min"] <= 120 and wk <= 120
            targets.append(("no busy polling (idle: at most 2 wake-ups/s in the master and in each worker)",
                            "master %s/min, workers at most %s/min" % (num(r["master_wakeups_per_min"]), num(wk)), busy, ""))
    else:
        w("Not measured (the figure failed).")
        w("")

    w("## 6. Memory")
    w("")
    if f5:
        w("Same pools as figure 5, sampled at the end of the idle period. USS = Private_Clean + "
          "Private_Dirty and PSS from `/proc/PID/smaps_rollup`; per worker: median (min-max) over the 8.")
        w("")
        rows = []
        for k in ("systempp", "nginx", "gunicorn"):
            m = f5["memory"].get(k)
            if not m:
                continue
            rows.append([NAMES[k], rng(m["worker_uss_kb"], " kB"), rng(m["worker_pss_kb"], " kB"),
                         rng(m["worker_rss_kb"], " kB"), num(m["master_rss_kb"], " kB"), num(m["master_pss_kb"], " kB"),
                         num(m["pool_pss_kb"] / 1024.0, " MB")])
        w(table(["server", "worker USS", "worker PSS", "worker RSS", "master RSS", "master PSS",
                 "whole pool PSS"], rows))
        w("")
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- 7 scale
    w("## 7. Scale: 1 to 256 workers")
    w("")
    if f7:
        counts = f7["counts"]
        runs = f7["runs"]
        metrics = [("serving_ms", "start"), ("reload_total_ms", "reload"), ("drain_ms", "drain")]
        kinds = ("systempp", "nginx", "gunicorn")
        for field, mname in metrics:
            # last column: a line of slope 1 (time proportional to N) through systempp's 8-worker median
            ref = summ([r.get(field) for r in runs.get("systempp/8", [])])
            with open(os.path.join(results, "scale_%s.dat" % mname), "w") as f:
                for n in counts:
                    cols = [str(n)]
                    for k in kinds:
                        s = summ([r.get(field) for r in runs.get("%s/%d" % (k, n), [])])
                        cols += ["NaN"] * 3 if not s else ["%.3f" % s["median"], "%.3f" % s["min"], "%.3f" % s["max"]]
                    cols.append("%.3f" % (ref["median"] * n / 8.0) if ref else "NaN")
                    f.write(" ".join(cols) + "\n")
        reps = max(len(v) for v in runs.values())
        w("For each worker count: start (launch to all up and a `200`), one reload, then drain; up to %d "
          "runs each (median, min-max)." % reps)
        skipped = {k: v for k, v in f7.get("skipped", {}).items() if v}
        once = f7.get("once", {})
        if skipped:
            w("Skipped: %s." % "; ".join("%s at %s workers" % (k, ", ".join(map(str, v))) for k, v in skipped.items()))
        if once:
            w("Run once only (too slow to repeat within the time budget): %s." %
              "; ".join("%s at %s workers" % (k, ", ".join(map(str, v))) for k, v in once.items()))
        w("")
        w("![start, reload and drain time against worker count](bench/scale.png)")
        w("")
        rows = []
        for k in kinds:
            for n in counts:
                rs = runs.get("%s/%d" % (k, n))
                if not rs:
                    continue
                st = summ([r["serving_ms"] for r in rs])
                rl = summ([r["reload_total_ms"] for r in rs])
                dr = summ([r["drain_ms"] for r in rs])
                cb = rs[0].get("control_block_bytes")
                rows.append([NAMES[k], str(n), rng(st, " ms"), num(st["median"] / n, " ms"), rng(rl, " ms"),
                             num(rl["median"] / n, " ms"), rng(dr, " ms"),
                             "{:,} B".format(cb) if cb else "-"])
        w(table(["server", "workers", "start", "start / worker", "reload", "reload / worker", "drain",
                 "control block"], rows))
        w("")
        # growth exponents: t ~ N^k between successive counts
        w("Growth between worker counts as an exponent k in time ~ N^k (k = 1 is linear; below 1 is "
          "better than linear, as fixed costs dominate at small N):")
        w("")
        rows = []
        worst = {}
        for k in kinds:
            for field, mname in metrics:
                ks = []
                for a, b in zip(counts, counts[1:]):
                    ra, rb = runs.get("%s/%d" % (k, a)), runs.get("%s/%d" % (k, b))
                    if not ra or not rb:
                        ks.append("-")
                        continue
                    ta = statistics.median([r[field] for r in ra])
                    tb = statistics.median([r[field] for r in rb])
                    e = math.log(tb / ta) / math.log(b / a) if ta > 0 and tb > 0 else None
                    ks.append("%.2f" % e if e is not None else "-")
                    if k == "systempp" and e is not None and b >= 64:
                        worst[mname] = max(worst.get(mname, -9), e)
                rows.append([NAMES[k], mname] + ks)
        w(table(["server", "what"] + ["%d -> %d" % (a, b) for a, b in zip(counts, counts[1:])], rows))
        w("")
        sp_cb = [(n, runs["systempp/%d" % n][0].get("control_block_bytes")) for n in counts if runs.get("systempp/%d" % n)]
        if sp_cb:
            w("systempp's control block (`/dev/shm/systempp.NAME.PID`) holds two records per slot for "
              "`max(16, 2 x --workers)` slots (the ceiling for SIGTTIN), so it is constant up to 8 workers "
              "and linear beyond: %s." % ", ".join("%d workers: %s bytes" % (n, "{:,}".format(b)) for n, b in sp_cb))
            w("")
        if worst:
            k = max(worst.values())
            targets.append(("times grow linearly or better up to 256 workers (k <= 1.1)",
                            ", ".join("%s k = %.2f" % (m, e) for m, e in worst.items()) + " (worst of 8->64, 64->256)",
                            k <= 1.1, "" if k <= 1.1 else "superlinear: k = %.2f" % k))
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- 8 respawn
    w("## 8. Respawn after SIGKILL")
    w("")
    if f8:
        s = f8["summary"]
        sp = s["systempp"]["median"]
        rows = [[NAMES[k], rng(s[k], " ms"), "-" if k == "systempp" else xr(ratio(s[k]["median"], sp))]
                for k in ("systempp", "nginx", "gunicorn") if k in s]
        w("SIGKILL to one of %d workers, to its replacement up (same definitions of up as above; for nginx "
          "that is the fork, for systempp the replacement's READY); %d kills each, interleaved." %
          (f8["workers"], s["systempp"]["n"]))
        w("")
        w(table(["server", "kill to replacement up", "peer ÷ systempp"], rows))
        w("")
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- timeline
    w("## Latency across a series of reloads")
    w("")
    if tl:
        w("One keep-alive connection (`scripts/bench/latency_client.py`: Python `http.client`, one request "
          "per ms, bounded in time and count) while the driver sends %d SIGHUPs, each after the previous "
          "reload finished plus 0.8 s; 8 workers. A failed request is plotted as a red x at 1 s." % tl["reloads"])
        w("")
        w("![latency over time across reloads](bench/reload_latency.png)")
        w("")
        rows = []
        for k in ("systempp", "nginx", "gunicorn"):
            r = tl["series"].get(k)
            if r:
                rows.append([NAMES[k], "{:,}".format(r["requests"]), "**%d**" % r["failed"], ", ".join(r["errors"]) or "-",
                             num(r["p50_ms"], " ms"), num(r["p99_ms"], " ms"), num(r["max_ms"], " ms"),
                             rng(r["reload_ms"], " ms")])
        w(table(["server", "requests", "failed", "errors", "p50", "p99", "max", "reload time"], rows))
        w("")
    else:
        w("Not measured (the figure failed).")
        w("")

    # ---------------------------------------------------------------- findings
    findings = analysis(f3, f4, f5, f7)
    if findings:
        w("## What the numbers say about systempp")
        w("")
        for para in findings:
            w(para)
            w("")

    # ---------------------------------------------------------------- targets at the top
    tdoc = ["## Targets", "", table(["target", "measured (systempp)", "met?", "by how much"],
                                    [[t, m, "yes" if ok else "**no**", note or "-"] for t, m, ok, note in targets]), ""]
    missed = [t for t, m, ok, note in targets if not ok]
    if missed:
        tdoc.append("Missed targets are explained under \"What the numbers say about systempp\" at the end.")
        tdoc.append("")
    doc[targets_at:targets_at] = tdoc

    w("## Reproduce")
    w("")
    w("```sh")
    w("scripts/bench/run            # full run, about 20 minutes on 2 cores; rewrites this file and docs/bench/*.png")
    w("scripts/bench/run --quick    # a few minutes: short runs, few repetitions (development)")
    w("scripts/bench/run --help     # options: --no-install, --no-build, --app PATH, --only FIGURES, --out DIR, --keep-tmp")
    w("```")
    w("")
    w("The driver (`scripts/bench/run`, helpers in `scripts/bench/`) installs wrk, hyperfine, gunicorn, "
      "nginx-light and gnuplot-nox with apt-get when missing, builds with `scripts/setup`, copies the app "
      "binary to a temp dir, runs every figure against 127.0.0.1 only, with every load bounded in time, "
      "and removes every process, control block and temp file it created, also when interrupted.")
    w("")

    with open(out_md, "w") as f:
        f.write("\n".join(doc))


def describe_regs(regs, key):
    if regs is None:
        return "-"
    if not regs:
        return "none (sync workers block in `select()` on it)" if key.startswith("gunicorn") else "none"
    parts = []
    for r in regs:
        parts.append("`%s`%s%s" % (r["events"], " exclusive" if r["exclusive"] else " not exclusive",
                                   ", nested in another epoll" if r["nested"] else ""))
    return "; ".join(parts)


def analysis(f3, f4, f5, f7):
    """Explanations that depend on the measured numbers (each paragraph only when it applies)."""
    out = []
    if f4:
        def m(key, field, where="runs"):
            runs = (f4.get(where) or {}).get(key)
            return statistics.median([r[field] for r in runs]) if runs else None

        herd = (f4.get("herd") or {}).get("systempp-8")
        ngherd = (f4.get("herd") or {}).get("nginx-8")
        guherd = (f4.get("herd") or {}).get("gunicorn-8")
        sp_close, ng_close, gu_close = m("systempp-8/close", "rps"), m("nginx-8/close", "rps"), m("gunicorn-8/close", "rps")
        sp_cpu, in_cpu, ng_cpu = (m("systempp-8/close", "server_cpu_us_per_req"), m("systempp-inline/close", "server_cpu_us_per_req"),
                                  m("nginx-8/close", "server_cpu_us_per_req"))
        if herd and herd["workers_woken_per_conn"] > 2.5:
            regs = herd.get("listener_registrations") or []
            plain = [r for r in regs if not r["exclusive"]]
            nested = [r for r in regs if r["exclusive"] and r["nested"]]
            pr = f4.get("epoll_probe")
            why = []
            if plain:
                why.append("the listener is registered, not exclusive, in the worker's main epoll (events `%s`: "
                           "EPOLLET|EPOLLIN|EPOLLPRI|EPOLLERR|EPOLLHUP, what Asio's reactor adds for every "
                           "descriptor given to an Asio object, here the `tcp::acceptor` the app `assign()`s "
                           "the listener to)" % plain[0]["events"])
            if nested:
                why.append("the exclusive registration (`%s`) is in a private epoll instance that is itself "
                           "registered in Asio's epoll, and `EPOLLEXCLUSIVE` does not work through a nested "
                           "epoll%s" % (nested[0]["events"], " (kernel check above: %s wake-ups per connection "
                                                             "nested against %s direct)" %
                                        (num(pr["nested"]["wakeups_per_conn"]), num(pr["direct"]["wakeups_per_conn"])) if pr else ""))
            out.append(
                "**Thundering herd on every new connection (performance bug).** On an idle 8-worker pool each "
                "connection woke %.1f of the 8 workers (%.1f worker wake-ups per connection; nginx: %s; "
                "gunicorn's sync workers, all in `select()` on the listener: %s). %s Every worker's loop thus "
                "wakes for every connection, calls `accept4`, gets EAGAIN and sleeps again. It costs CPU, not "
                "correctness: in the connection-close runs the 8-worker pool spends %s µs of CPU per request "
                "against %s µs for the same app in one process (%s wake-ups per request against %s). %s" %
                (herd["workers_woken_per_conn"], herd["worker_wakeups_per_conn"],
                 "%.1f workers, its listener is in its only epoll with `EPOLLEXCLUSIVE`" % ngherd["workers_woken_per_conn"] if ngherd else "-",
                 "%.1f workers" % guherd["workers_woken_per_conn"] if guherd else "-",
                 (("Two causes, both visible in `/proc/<worker>/fdinfo`: " if len(why) > 1 else
                   "The cause is visible in `/proc/<worker>/fdinfo`: ") + "; and ".join(why) + ".") if why else "",
                 num(sp_cpu), num(in_cpu), num(m("systempp-8/close", "server_wakeups_per_req")),
                 num(m("systempp-inline/close", "server_wakeups_per_req")),
                 "The wait for new connections has to be exclusive *and* direct: a private epoll instance "
                 "with `EPOLLEXCLUSIVE` that is itself handed to Asio does not help (%s), so either a thread per "
                 "worker blocks in `epoll_wait` on that instance and hands accepted sockets to the loop, or the "
                 "listener goes into Asio's own epoll with `EPOLLEXCLUSIVE` (not possible through Asio's public "
                 "API), or each worker gets its own `SO_REUSEPORT` listener, at the price of the connections "
                 "queued on a draining worker's socket being reset." %
                 ("kernel check above: %s wake-ups per connection nested, %s direct" %
                  (num(pr["nested"]["wakeups_per_conn"]), num(pr["direct"]["wakeups_per_conn"])) if pr else "see the kernel check")))
        if sp_close and ng_close and sp_close / ng_close < 0.95:
            out.append(
                "**Connection-close throughput: %.2fx nginx, target 0.95x.** Per request the 8-worker pool "
                "spends %s µs of CPU, the same app in one process %s µs, nginx %s µs: the one process beats "
                "nginx, so the HTTP path is not what is missing; the pool's cost is 8 processes on 2 cores "
                "(switches between them, colder caches) and the wake-ups per connection (%s; the herd is gone "
                "with `--accept reuseport`, see the table above). `--accept exclusive` pays a thread hop per "
                "wake-up on top (%s requests/s) and `shared` the herd (%s). With two cores shared with wrk, "
                "CPU per request is throughput." %
                (sp_close / ng_close, num(sp_cpu), num(in_cpu), num(ng_cpu),
                 num(m("systempp-8/close", "server_wakeups_per_req")),
                 "{:,.0f}".format(m("systempp-8-exclusive/close", "rps") or 0),
                 "{:,.0f}".format(m("systempp-8-shared/close", "rps") or 0)))
        if sp_close and gu_close and ng_close and sp_close / gu_close < 5:
            out.append(
                "**Against gunicorn, connection-close: %.2fx, target 5x.** A new TCP connection per request "
                "is expensive on both sides of loopback (handshake, teardown, TIME_WAIT, wrk's own work on "
                "the same two cores), and that cost is the same whatever the server: even nginx manages only "
                "%.2fx gunicorn in this mode here (keep-alive: %s). 5x gunicorn with connection-close is out "
                "of reach on this machine for any server; systempp's own shortfall below nginx's ratio is "
                "the pool's cost above." %
                (sp_close / gu_close, ng_close / gu_close,
                 xr(ratio(m("nginx-8/keepalive", "rps"), m("gunicorn-8/keepalive", "rps")))))
        sp_ka, ng_ka = m("systempp-8/keepalive", "rps"), m("nginx-8/keepalive", "rps")
        if sp_ka and ng_ka and sp_ka < ng_ka:
            out.append(
                "**Keep-alive throughput: %.2fx nginx, target 1x.** Again CPU per request: %s µs for "
                "systempp's pool, %s µs for nginx, %s µs for the same app in one process, so the HTTP path "
                "itself costs no more than nginx's. What the pool adds is where the connections are: with "
                "`--accept reuseport` the 32 connections are spread over all 8 workers when they connect "
                "(at random: in the runs where every worker got some, the busiest served %s times what the "
                "idlest did) and stay there, so 8 processes take turns on the one core wrk leaves, "
                "each finding one or two ready connections per wake-up (%s wake-ups per request); "
                "`--accept exclusive` reaches %s requests/s and `shared` %s, where the connections gather on "
                "the workers that happen to be awake, as nginx's do (its wake-ups wake the most recent "
                "sleeper). On this oversubscribed machine keep-alive throughput and fairness pull in "
                "opposite directions; with a worker per core the spread costs nothing." %
                (sp_ka / ng_ka, num(m("systempp-8/keepalive", "server_cpu_us_per_req")),
                 num(m("nginx-8/keepalive", "server_cpu_us_per_req")),
                 num(m("systempp-inline/keepalive", "server_cpu_us_per_req")),
                num(statistics.median([r["fairness"] for r in f4["runs"]["systempp-8/keepalive"]
                                        if r.get("fairness") is not None] or [float("nan")])),
                 num(m("systempp-8/keepalive", "server_wakeups_per_req")),
                 "{:,.0f}".format(m("systempp-8-exclusive/keepalive", "rps") or 0),
                 "{:,.0f}".format(m("systempp-8-shared/keepalive", "rps") or 0)))
        pin = f4.get("pinned") or {}
        if pin.get("systempp-8/close") and pin.get("systempp-inline/close"):
            def ovn(key, mode):
                b, c = m("systempp-inline/%s" % mode, "server_cpu_us_per_req", "pinned"), m("%s/%s" % (key, mode), "server_cpu_us_per_req", "pinned")
                return 1 - b / c if b and c else 0.0

            def ov(key, mode):
                return pct(ovn(key, mode))
            out.append(
                "**Runtime overhead per core.** On one core, per request of server CPU: 1 worker vs "
                "`--workers 0`: keep-alive %s, close %s; 8 workers: keep-alive %s, close %s. The 1-worker "
                "pool is what the runtime itself adds per request: nothing on the request path (the master "
                "does not see requests; the heartbeat is a 1 s timer; a request does three relaxed atomic "
                "adds on its control-block record)%s. 8 workers on one core are 8x "
                "oversubscribed: the 32 connections are spread over 8 processes, so each wake-up finds fewer "
                "ready connections (keep-alive: %s wake-ups per request against %s with one worker) and each "
                "switch between processes costs a context switch and cold caches and TLB; for new connections "
                "the herd comes on top (close: %s wake-ups per request against %s). That is the price of more "
                "workers than cores, not of the runtime: nginx pays less for it because each of its wake-ups "
                "is cheaper. Run-to-run noise on this shared machine is a few percent (see min-max)." %
                (ov("systempp-1", "keepalive"), ov("systempp-1", "close"),
                 ov("systempp-8", "keepalive"), ov("systempp-8", "close"),
                 ", so what it shows is noise" if max(abs(ovn("systempp-1", "keepalive")), abs(ovn("systempp-1", "close"))) < 0.03 else
                 "; a difference of several percent either way, as here, is the noise of a machine shared with other "
                 "work (see the share of other processes above and the min-max of requests/s), not a cost of the pool",
                 num(m("systempp-8/keepalive", "server_wakeups_per_req", "pinned")), num(m("systempp-1/keepalive", "server_wakeups_per_req", "pinned")),
                 num(m("systempp-8/close", "server_wakeups_per_req", "pinned")), num(m("systempp-1/close", "server_wakeups_per_req", "pinned"))))
    if f7:
        runs = f7["runs"]

        def med(k, n, field):
            rs = runs.get("%s/%d" % (k, n))
            vals = [r[field] for r in rs if r.get(field) is not None] if rs else []
            return statistics.median(vals) if vals else None

        counts = [n for n in f7["counts"] if runs.get("systempp/%d" % n)]
        if len(counts) >= 2:
            big, small = counts[-1], counts[-2]
            parts = []
            for field, what in (("serving_ms", "start"), ("reload_total_ms", "reload"), ("drain_ms", "drain")):
                a, b = med("systempp", small, field), med("systempp", big, field)
                if a and b:
                    parts.append("%s %.2f -> %.2f ms per worker (k = %.2f)" % (what, a / small, b / big,
                                                                             math.log(b / a) / math.log(big / small)))
            ca, cb = med("systempp", small, "master_cpu_reload_ms"), med("systempp", big, "master_cpu_reload_ms")
            text = ("**Growth with the worker count.** systempp from %d to %d workers: %s. The reload is "
                    "sequential (`--reload-surge 1`): each slot is a fork, the new worker's startup and READY, "
                    "a round trip through the master's loop, and the old worker's drain." % (small, big, "; ".join(parts)))
            if ca and cb:
                text += (" The master's own CPU during the reload: %.3f ms per slot at %d workers, %.3f ms at %d (%s)."
                         % (ca / small, small, cb / big, big, pct(cb / big / (ca / small) - 1)))
            ks = []
            for field in ("serving_ms", "reload_total_ms", "drain_ms"):
                a, b = med("systempp", small, field), med("systempp", big, field)
                if a and b:
                    ks.append(math.log(b / a) / math.log(big / small))
            text += (" A drain is N exits in a row, each handled by the same one-pass policy.")
            text += (" %s From the code: the policy looks at every process once per event (`next_deadline()` and "
                     "`fill_slots()`, one pass each), so a sequential rollout does O(N^2) work in the master in "
                     "total, a few microseconds per event at 256 workers; a new worker neither keeps the master's "
                     "channels in its reactor nor closes them one by one (`close_range`). What still grows per slot "
                     "is the fork: the master's page tables and the copy-on-write faults it takes after each fork, "
                     "with the old worker's exit competing for the same two cores."
                     % ("In this run that is linear." if ks and max(ks) <= 1.1 else "In this run that is not linear."))
            out.append(text)
    return out


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "meta":
        out, root, app, build_dir = sys.argv[2:6]
        cmd = sys.argv[sys.argv.index("--") + 1:]
        meta(out, root, app, build_dir, " ".join(shlex.quote(c) for c in cmd))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "finish":
        m = json.load(open(sys.argv[2]))
        m["finished_epoch"] = datetime.datetime.now().timestamp()
        m["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        with open(sys.argv[2], "w") as f:
            json.dump(m, f, indent=1)
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "render":
        render(sys.argv[2], sys.argv[3], sys.argv[4])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
