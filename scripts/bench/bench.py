#!/usr/bin/env python3
"""One figure of the benchmarks per call: `bench.py FIGURE` (see FIGURES below).

Called by scripts/bench/run, which sets BENCH_TMP (a temp dir it removes), BENCH_APP (a
private copy of the app binary), BENCH_PREFIX (pool names) and BENCH_QUICK. Results go
to $BENCH_TMP/results/FIGURE.json; report.py turns them into docs/BENCHMARKS.md.
Every server started here is stopped here (finally), and registered in $BENCH_TMP/pgids
so that the shell's trap can kill its process group if this process is killed.
"""
import os
import signal
import subprocess
import sys
import time

import benchlib as B

CTX = None


def params():
    quick = CTX.quick
    return {
        "reps_start": 3 if quick else 10,
        "reps_reload": 3 if quick else 10,
        "reloads_under_load": 3 if quick else 10,
        "reload_gap_s": 0.5,
        "tp_reps": 1 if quick else 3,
        "tp_seconds": 3 if quick else 8,
        "pin_reps": 1 if quick else 3,
        "pin_seconds": 3 if quick else 6,
        "idle_seconds": 10 if quick else 60,
        "scale_reps": 1 if quick else 3,
        "scale_counts": [1, 8, 64, 256],
        "respawn_reps": 3 if quick else 10,
        "timeline_reloads": 3 if quick else 10,
        "timeline_gap_s": 0.8,
        "hyperfine_runs": 5 if quick else 20,
        "workers": 8,
        "conns": 32,
    }


def started(kind, workers, **kw):
    s = B.make(CTX, kind, workers, **kw)
    try:
        r = s.start()
    except Exception:
        s.kill()
        raise
    return s, r


# ---------------------------------------------------------------------------------------
# 1. cold start


def f1_coldstart():
    p = params()
    kinds = ["systempp", "systempp-exec", "nginx", "gunicorn"]
    runs = {k: [] for k in kinds}
    checks = []
    for rep in range(p["reps_start"]):
        for kind in kinds:
            s = B.make(CTX, kind, p["workers"])
            try:
                r = s.start()
                if kind.startswith("systempp"):
                    ok, st = s.check_all_ready()
                    checks.append(ok)
                r.update(s.stop())
            finally:
                s.kill()
            runs[kind].append(r)
            B.log("coldstart", kind, rep, r)
            time.sleep(0.2)
    out = {"workers": p["workers"], "runs": runs, "status_all_ready_after_READY": all(checks),
           "summary": {k: {m: B.summary([r[m] for r in v]) for m in ("ready_ms", "serving_ms", "drain_ms")}
                       for k, v in runs.items()}}
    CTX.save("f1_coldstart", out)


# ---------------------------------------------------------------------------------------
# 2. rolling reload (idle), plus hyperfine on `app reload --wait` / `app status --json`


def hyperfine(name, cmd, runs):
    path = os.path.join(CTX.tmp, "hyperfine-%s.json" % name)
    r = subprocess.run(["hyperfine", "-N", "--style", "none", "--runs", str(runs), "--warmup", "1",
                        "--export-json", path, cmd], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise B.BenchError("hyperfine failed: %s" % r.stderr.strip())
    import json
    res = json.load(open(path))["results"][0]
    return {"command": cmd, "runs": len(res["times"]), "median_ms": round(res["median"] * 1000, 3),
            "min_ms": round(res["min"] * 1000, 3), "max_ms": round(res["max"] * 1000, 3),
            "mean_ms": round(res["mean"] * 1000, 3)}


def f2_reload():
    p = params()
    kinds = ["systempp", "systempp-exec", "nginx", "gunicorn"]
    servers = {}
    runs = {k: [] for k in kinds}
    out = {"workers": p["workers"]}
    try:
        for kind in kinds:
            servers[kind], _ = started(kind, p["workers"])
        time.sleep(0.5)
        for rep in range(p["reps_reload"]):
            for kind in kinds:
                s = servers[kind]
                r = s.reload()
                if kind.startswith("systempp"):
                    st = s.status()
                    r["internal_ms"] = st["reload"]["duration_ms"]
                    r["outcome"] = st["reload"]["outcome"]
                runs[kind].append(r)
                B.log("reload", kind, rep, r)
                time.sleep(p["reload_gap_s"] / 2)
        s = servers["systempp"]
        out["hyperfine"] = {
            "reload_wait": hyperfine("reload", "%s reload --wait --name %s" % (CTX.app, s.name), p["hyperfine_runs"]),
            "status_json": hyperfine("status", "%s status --name %s --json" % (CTX.app, s.name), p["hyperfine_runs"]),
        }
    finally:
        for s in servers.values():
            s.kill()
    out["runs"] = runs
    out["summary"] = {k: {m: B.summary([r.get(m) for r in v]) for m in ("total_ms", "new_up_ms", "old_gone_ms",
                                                                          "internal_ms")}
                      for k, v in runs.items()}
    CTX.save("f2_reload", out)


# ---------------------------------------------------------------------------------------
# 3. failed requests across reloads under load


# The servers of figure 3: systempp with each --accept strategy, nginx, gunicorn.
F3_SERVERS = [("systempp", "systempp", []), ("systempp-exclusive", "systempp", ["--accept", "exclusive"]),
              ("systempp-shared", "systempp", ["--accept", "shared"]), ("nginx", "nginx", None),
              ("gunicorn", "gunicorn", None)]


def across_load(s, close, conns, event):
    """wrk on `s` for the whole of `event(s)` (1 s before it, 0.5 s after): wrk's result, with
    what the event returned under "event"."""
    wrk = subprocess.Popen(B.wrk_command(s.port, conns, 120, 2, close=close), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(1.0)
        info = event(s)
        time.sleep(0.5)
        wrk.send_signal(signal.SIGINT)
        so, _ = wrk.communicate(timeout=30)
        r = B.parse_wrk(so)
        wrk = None
        r["event"] = info
        return r
    finally:
        if wrk is not None:
            wrk.kill()
            wrk.wait()


def reloads(n, gap):
    def run(s):
        done = []
        for _ in range(n):
            done.append(s.reload())
            time.sleep(gap)
        return {"reload_ms": B.summary([x["total_ms"] for x in done]), "reloads": len(done)}
    return run


def scale_down_up(s):
    """8 -> 4 -> 8 with `app scale`, each step until the pool is exactly that many ready workers."""
    took = {}
    for n in (s.workers // 2, s.workers):
        t0 = B.now()
        s.scale(n)
        took["to_%d_ms" % n] = B.ms(B.now() - t0)
        time.sleep(0.5)
    return took


def kill_one(s):
    """SIGKILL the busiest worker: what it held is lost with it, whatever the server."""
    s.pump()  # the workers respawned by an earlier event are candidates too
    victim = B.busiest(s.live_pids())
    held = B.connections_held(victim, s.port)
    r = s.respawn(victim=victim)
    r["victim_connections"] = held
    return r


def stop_one(s):
    """SIGSTOP the busiest worker for 1 s: what its queued and open connections wait."""
    s.pump()
    victim = B.busiest(s.live_pids())
    held = B.connections_held(victim, s.port)
    os.kill(victim, signal.SIGSTOP)
    try:
        time.sleep(1.0)
    finally:
        os.kill(victim, signal.SIGCONT)
    return {"stopped_s": 1.0, "victim_connections": held}


def f3_failures():
    p = params()
    out = {"workers": p["workers"], "conns": p["conns"], "reloads": p["reloads_under_load"], "runs": {},
           "events": {}, "servers": [label for label, _, _ in F3_SERVERS]}
    for label, kind, extra in F3_SERVERS:
        s, _ = started(kind, p["workers"], label=label, **({"extra": extra} if extra else {}))
        try:
            time.sleep(0.3)
            for close in (False, True):
                mode = "close" if close else "keepalive"
                r = across_load(s, close, p["conns"], reloads(p["reloads_under_load"], p["reload_gap_s"]))
                r.update(r.pop("event"))
                out["runs"]["%s/%s" % (label, mode)] = r
                B.log("failures", label, mode, "reloads", {k: r[k] for k in ("requests", "failed", "connect", "read",
                                                                             "write", "timeout", "status")})
                events = [("kill", kill_one)] + ([("scale", scale_down_up)] if kind == "systempp" else [])
                if close:
                    events.append(("stop", stop_one))
                for name, event in events:
                    r = across_load(s, close, p["conns"], event)
                    out["events"]["%s/%s/%s" % (label, mode, name)] = r
                    B.log("failures", label, mode, name, {k: r[k] for k in ("requests", "failed", "read", "timeout",
                                                                           "lat_p99_us", "lat_max_us")})
        finally:
            s.kill()
    CTX.save("f3_failures", out)


# ---------------------------------------------------------------------------------------
# 4. throughput


def pool_sample(s):
    pids = ([s.master_pid()] if s.proc else []) + s.live_pids()
    samples = {pid: B.cpu_sample(pid) for pid in pids}
    return {pid: v for pid, v in samples.items() if v}


def pool_delta(a, b):
    cpu_ns = vol = invol = 0
    for pid, x in b.items():
        y = a.get(pid)
        if y is None:
            continue
        cpu_ns += x["cpu_ns"] - y["cpu_ns"]
        vol += x["vol"] - y["vol"]
        invol += x["invol"] - y["invol"]
    return cpu_ns, vol, invol


def worker_requests(s):
    """Requests served so far by each live systempp worker (pid -> count), or None."""
    if getattr(s, "kind", "") != "systempp" or not s.workers:
        return None
    return {w["pid"]: w["requests"] for w in s.status()["workers"] if w.get("role", "serve") == "serve"}


def measure(s, close, seconds, threads, conns, cpus=None):
    before = worker_requests(s)
    a = pool_sample(s)
    r = B.run_wrk(s.port, conns, seconds, threads, close=close, cpus=cpus)
    b = pool_sample(s)
    after = worker_requests(s)
    if before is not None and after:
        # fairness: requests per worker during the run, the busiest over the idlest
        served = [after[pid] - before.get(pid, 0) for pid in after]
        r["per_worker_requests"] = served
        r["fairness"] = round(max(served) / min(served), 3) if min(served) > 0 else None
    cpu_ns, vol, invol = pool_delta(a, b)
    n = max(1, r["requests"])
    r["server_cpu_us_per_req"] = round(cpu_ns / 1000.0 / n, 3)
    r["server_wakeups_per_req"] = round(vol / n, 4)
    r["server_ctxsw_per_req"] = round((vol + invol) / n, 4)
    return r


def interleaved(servers, labels, reps, seconds, threads, conns, into, what, cpus=None):
    """Each label's keep-alive and connection-close runs, rep after rep (A B C A B C ...),
    appended to into["LABEL/keepalive|close"]."""
    for rep in range(reps):
        for label in labels:
            for close in (False, True):
                key = "%s/%s" % (label, "close" if close else "keepalive")
                r = measure(servers[label], close, seconds, threads, conns, cpus=cpus)
                into.setdefault(key, []).append(r)
                B.log(what, key, rep, round(r["rps"]), "rps", "failed", r["failed"])
                time.sleep(0.3)


def herd_probe(s, n):
    """Sequential connection-close GETs to an idle pool, 2 ms apart: how many worker
    wake-ups (voluntary context switches) each connection costs. One worker should wake
    per connection (two with the client's FIN); a thundering herd wakes all of them."""
    time.sleep(1.2)  # let the heartbeat timers tick out of the way
    pids = s.live_pids()
    a = {pid: B.cpu_sample(pid) for pid in pids}
    m0 = B.cpu_sample(s.master_pid())
    for _ in range(n):
        if not B.http_get(s.port):
            raise B.BenchError("%s: probe GET failed" % s.label)
        time.sleep(0.002)
    b = {pid: B.cpu_sample(pid) for pid in pids}
    m1 = B.cpu_sample(s.master_pid())
    vols = [b[p]["vol"] - a[p]["vol"] for p in pids if a[p] and b[p]]
    return {"connections": n, "workers": len(pids),
            "listener_registrations": B.epoll_registrations(pids[0], s.port) if pids else None,
            "worker_wakeups_per_conn": round(sum(vols) / n, 3),
            "workers_woken_per_conn": round(sum(min(v, n) for v in vols) / n, 3),
            "per_worker_wakeups": vols,
            "master_wakeups_per_conn": round((m1["vol"] - m0["vol"]) / n, 3)}


def f4_throughput():
    p = params()
    ncpu = os.cpu_count() or 1
    out = {"ncpu": ncpu, "workers": p["workers"], "conns": p["conns"], "seconds": p["tp_seconds"],
           "pin_seconds": p["pin_seconds"],
           "reps": p["tp_reps"], "runs": {}, "pinned": {}}
    # systempp-8 runs the default --accept (reuseport); the other strategies beside it.
    configs = [("systempp-8", "systempp", p["workers"]), ("nginx-8", "nginx", p["workers"]),
               ("gunicorn-8", "gunicorn", p["workers"]), ("systempp-inline", "systempp", 0),
               ("systempp-8-exclusive", "systempp", p["workers"]), ("systempp-8-shared", "systempp", p["workers"])]
    servers = {}
    try:
        for label, kind, n in configs:
            extra = ["--accept", label.rsplit("-", 1)[1]] if label.endswith(("-exclusive", "-shared")) else []
            servers[label], _ = started(kind, n, label=label, **({"extra": extra} if extra else {}))
        probe = subprocess.run([sys.executable, os.path.join(B.HERE, "epoll_probe.py"), "8", "100"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            out["epoll_probe"] = __import__("json").loads(probe.stdout)
            B.log("epoll probe", out["epoll_probe"])
        out["herd"] = {}
        for label in ("systempp-8", "systempp-8-exclusive", "systempp-8-shared", "nginx-8", "gunicorn-8"):
            out["herd"][label] = herd_probe(servers[label], 200 if CTX.quick else 400)
            B.log("herd probe", label, out["herd"][label])
        interleaved(servers, [c[0] for c in configs], p["tp_reps"], p["tp_seconds"], min(2, ncpu), p["conns"],
                    out["runs"], "throughput")
    finally:
        for s in servers.values():
            s.kill()
    # --cpu-affinity: one worker per CPU, pinned (auto) or left to the scheduler, interleaved.
    # wrk runs on the same cores, as in the runs above.
    aff = [("systempp-cpus", []), ("systempp-cpus-affinity", ["--cpu-affinity", "auto"])]
    out["affinity"] = {}
    servers = {}
    try:
        for label, extra in aff:
            servers[label], _ = started("systempp", ncpu, label=label, **({"extra": extra} if extra else {}))
        interleaved(servers, [a[0] for a in aff], p["tp_reps"], p["tp_seconds"], min(2, ncpu), p["conns"],
                    out["affinity"], "affinity")
    finally:
        for s in servers.values():
            s.kill()
    # The same app with 0, 1 and 8 workers (and nginx) on one core, wrk on the other:
    # per-core throughput, so the pool's overhead is not hidden by (or blamed on) the
    # second core that wrk also needs.
    if ncpu >= 2:
        pinned = [("systempp-inline", "systempp", 0), ("systempp-1", "systempp", 1),
                  ("systempp-8", "systempp", p["workers"]), ("nginx-8", "nginx", p["workers"])]
        servers = {}
        try:
            for label, kind, n in pinned:
                servers[label], _ = started(kind, n, label=label + "@cpu1", cpus="1")
            interleaved(servers, [c[0] for c in pinned], p["pin_reps"], p["pin_seconds"], 1, p["conns"],
                        out["pinned"], "pinned", cpus="0")
        finally:
            for s in servers.values():
                s.kill()
    CTX.save("f4_throughput", out)


# ---------------------------------------------------------------------------------------
# 5 + 6. master idle CPU and wake-ups; memory


def f5_idle_memory():
    p = params()
    kinds = ["systempp", "nginx", "gunicorn"]
    servers = {}
    out = {"workers": p["workers"], "idle_seconds": p["idle_seconds"], "clk_tck": B.CLK_TCK, "idle": {}, "memory": {}}
    try:
        for kind in kinds:
            servers[kind], _ = started(kind, p["workers"])
        # Warm up: every worker serves, so memory is what a serving pool holds.
        for kind in kinds:
            B.run_wrk(servers[kind].port, p["conns"], 2, 2)
        time.sleep(3)
        before = {}
        for kind, s in servers.items():
            before[kind] = {"master": B.cpu_sample(s.master_pid()),
                            "workers": {pid: B.cpu_sample(pid) for pid in s.live_pids()}}
        t0 = time.monotonic()
        time.sleep(p["idle_seconds"])
        elapsed = time.monotonic() - t0
        per_min = 60.0 / elapsed
        for kind, s in servers.items():
            m = B.cpu_delta(before[kind]["master"], B.cpu_sample(s.master_pid()))
            wk = []
            for pid, a in before[kind]["workers"].items():
                b = B.cpu_sample(pid)
                if b:
                    wk.append(B.cpu_delta(a, b))
            out["idle"][kind] = {
                "elapsed_s": round(elapsed, 3),
                "master_cpu_ms_per_min_ticks": round(m["ticks"] * 1000.0 / B.CLK_TCK * per_min, 3),
                "master_cpu_ms_per_min": round(m["cpu_ns"] / 1e6 * per_min, 3),
                "master_wakeups_per_min": round(m["vol"] * per_min, 1),
                "master_invol_per_min": round(m["invol"] * per_min, 1),
                "worker_cpu_ms_per_min": B.summary([w["cpu_ns"] / 1e6 * per_min for w in wk]),
                "worker_wakeups_per_min": B.summary([w["vol"] * per_min for w in wk]),
            }
            mem_w = [B.mem_sample(pid) for pid in s.live_pids()]
            mem_w = [m_ for m_ in mem_w if m_]
            mm = B.mem_sample(s.master_pid())
            out["memory"][kind] = {
                "workers": len(mem_w),
                "worker_uss_kb": B.summary([m_["uss_kb"] for m_ in mem_w]),
                "worker_pss_kb": B.summary([m_["pss_kb"] for m_ in mem_w]),
                "worker_rss_kb": B.summary([m_["rss_kb"] for m_ in mem_w]),
                "master_rss_kb": mm["rss_kb"], "master_pss_kb": mm["pss_kb"], "master_uss_kb": mm["uss_kb"],
                "pool_pss_kb": mm["pss_kb"] + sum(m_["pss_kb"] for m_ in mem_w),
            }
            B.log("idle", kind, out["idle"][kind])
            B.log("memory", kind, out["memory"][kind])
    finally:
        for s in servers.values():
            s.kill()
    CTX.save("f5_idle_memory", out)


# ---------------------------------------------------------------------------------------
# 7. scale


def f7_scale():
    p = params()
    counts = p["scale_counts"]
    # gunicorn's arbiter sleeps 0-100 ms (random) after each fork at start, so 256 of its
    # workers take ~13 s to start: run that once in the full run, skip it in --quick.
    big_gunicorn = [c for c in counts if c > 64]
    plan = {"systempp": counts, "nginx": counts,
            "gunicorn": [c for c in counts if c <= 64] + ([] if CTX.quick else big_gunicorn)}
    once = {"gunicorn": [] if CTX.quick else big_gunicorn}
    out = {"counts": counts, "plan": plan, "skipped": {"gunicorn": big_gunicorn if CTX.quick else []},
           "once": {k: v for k, v in once.items() if v}, "runs": {}}
    for n in counts:
        for rep in range(p["scale_reps"]):
            for kind, ks in plan.items():
                if n not in ks or (rep > 0 and n in once.get(kind, [])):
                    continue
                s = B.make(CTX, kind, n)
                try:
                    timeout = 120 + n
                    r = s.start(timeout)
                    m0 = B.cpu_sample(s.master_pid())  # the master's own CPU during start
                    if kind == "systempp":
                        r["control_block_bytes"] = s.control_block()
                    time.sleep(0.2)
                    m1 = B.cpu_sample(s.master_pid())
                    r.update({"reload_" + k: v for k, v in s.reload(timeout).items()})
                    m2 = B.cpu_sample(s.master_pid())
                    r["master_cpu_start_ms"] = round(m0["cpu_ns"] / 1e6, 3)
                    r["master_cpu_reload_ms"] = round((m2["cpu_ns"] - m1["cpu_ns"]) / 1e6, 3)
                    time.sleep(0.2)
                    r.update(s.stop(timeout))
                finally:
                    s.kill()
                out["runs"].setdefault("%s/%d" % (kind, n), []).append(r)
                B.log("scale", kind, n, rep, r)
                time.sleep(0.2)
    CTX.save("f7_scale", out)


# ---------------------------------------------------------------------------------------
# 8. respawn after SIGKILL


def f8_respawn():
    p = params()
    kinds = ["systempp", "nginx", "gunicorn"]
    servers = {}
    runs = {k: [] for k in kinds}
    try:
        for kind in kinds:
            servers[kind], _ = started(kind, p["workers"])
        time.sleep(0.3)
        for rep in range(p["respawn_reps"]):
            for kind in kinds:
                r = servers[kind].respawn()
                runs[kind].append(r)
                B.log("respawn", kind, rep, r)
                time.sleep(0.3)
    finally:
        for s in servers.values():
            s.kill()
    CTX.save("f8_respawn", {"workers": p["workers"], "runs": runs,
                            "summary": {k: B.summary([r["respawn_ms"] for r in v]) for k, v in runs.items()}})


# ---------------------------------------------------------------------------------------
# latency over time across reloads (the plot)


def timeline():
    p = params()
    kinds = ["systempp", "nginx", "gunicorn"]
    out = {"workers": p["workers"], "reloads": p["timeline_reloads"], "series": {}}
    seconds = 1.0 + p["timeline_reloads"] * (p["timeline_gap_s"] + 0.5) + 1.0
    for kind in kinds:
        s, _ = started(kind, p["workers"])
        client = None
        try:
            tsv = os.path.join(CTX.results, "timeline_%s.tsv" % kind)
            client = subprocess.Popen([sys.executable, os.path.join(B.HERE, "latency_client.py"), str(s.port),
                                       "%.1f" % seconds, "200000", tsv, "1"], start_new_session=True)
            time.sleep(1.0)
            marks = []
            for _ in range(p["timeline_reloads"]):
                t = time.monotonic()
                r = s.reload()
                marks.append((t, t + r["total_ms"] / 1000.0))
                time.sleep(p["timeline_gap_s"])
            client.wait(timeout=seconds + 30)
            client = None
            rows = [line.split("\t") for line in open(tsv).read().splitlines()]
            t0 = float(rows[0][0])
            with open(os.path.join(CTX.results, "timeline_%s.dat" % kind), "w") as f:
                for row in rows:
                    f.write("%.4f %s %s\n" % (float(row[0]) - t0, row[1], row[2]))
            with open(os.path.join(CTX.results, "marks_%s.dat" % kind), "w") as f:
                for a, b in marks:
                    f.write("%.4f %.4f\n" % (a - t0, b - t0))
            lat = sorted(float(r[1]) for r in rows if r[2] == "1")
            fails = [r for r in rows if r[2] != "1"]
            out["series"][kind] = {
                "requests": len(rows), "failed": len(fails),
                "errors": sorted({r[3] for r in fails}),
                "p50_ms": lat[len(lat) // 2] if lat else None,
                "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
                "max_ms": lat[-1] if lat else None,
                "reload_ms": B.summary([(b - a) * 1000 for a, b in marks]),
            }
            B.log("timeline", kind, out["series"][kind])
        finally:
            if client is not None:
                client.kill()
                client.wait()
            s.kill()
    CTX.save("timeline", out)


def quiet():
    """Waits (at most BENCH_QUIET_MAX s) until the machine is quiet: at least 85% of all
    CPU time idle over 1 s, twice in a row, so that a figure does not start in the middle
    of someone else's compile. Records what it saw in results/quiet.json."""
    limit = float(os.environ.get("BENCH_QUIET_MAX", "0"))
    fig = os.environ.get("BENCH_FIGURE", "?")

    def idle_fraction():
        def snap():
            f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
            return f[3] + f[4], sum(f)
        i0, t0 = snap()
        time.sleep(1.0)
        i1, t1 = snap()
        return (i1 - i0) / max(1, t1 - t0)

    start = time.monotonic()
    seen = []
    good = 0
    while True:
        frac = idle_fraction()
        seen.append(round(frac, 3))
        good = good + 1 if frac >= 0.85 else 0
        if good >= 2 or time.monotonic() - start >= limit:
            break
    path = os.path.join(CTX.results, "quiet.json")
    data = __import__("json").load(open(path)) if os.path.exists(path) else {}
    data[fig] = {"waited_s": round(time.monotonic() - start, 1), "idle_last": seen[-1],
                 "quiet": good >= 2 or seen[-1] >= 0.85}
    with open(path, "w") as f:
        __import__("json").dump(data, f, indent=1)
    B.log("quiet check before", fig, data[fig])


FIGURES = {
    "quiet": quiet,
    "f1_coldstart": f1_coldstart,
    "f2_reload": f2_reload,
    "f3_failures": f3_failures,
    "f4_throughput": f4_throughput,
    "f5_idle_memory": f5_idle_memory,
    "f7_scale": f7_scale,
    "f8_respawn": f8_respawn,
    "timeline": timeline,
}


def main():
    global CTX
    if len(sys.argv) != 2 or sys.argv[1] not in FIGURES:
        print("usage: bench.py {%s}" % ",".join(FIGURES), file=sys.stderr)
        return 2
    CTX = B.Ctx()

    def on_term(sig, frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    stat0, t0 = machine_cpu(), time.monotonic()
    try:
        FIGURES[sys.argv[1]]()
    finally:
        CTX.cleanup()
    if sys.argv[1] != "quiet":
        record_interference(sys.argv[1], stat0, machine_cpu(), time.monotonic() - t0)
    return 0


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    total = sum(f[:8])
    return total - f[3] - f[4], total


def record_interference(fig, a, b, seconds):
    """How much of the machine other people's processes used while this figure ran: the
    machine's busy CPU minus this process tree's own CPU (every server, worker, wrk and
    client started here has been reaped by now, so os.times() includes them)."""
    t = os.times()
    own = (t.user + t.system + t.children_user + t.children_system) * B.CLK_TCK
    busy, total = b[0] - a[0], b[1] - a[1]
    foreign = max(0.0, (busy - own) / total) if total else 0.0
    path = os.path.join(CTX.results, "interference.json")
    data = __import__("json").load(open(path)) if os.path.exists(path) else {}
    data[fig] = {"seconds": round(seconds, 1), "foreign_cpu": round(foreign, 3),
                 "own_cpu": round(own / total, 3) if total else 0.0}
    with open(path, "w") as f:
        __import__("json").dump(data, f, indent=1)
    B.log("interference during", fig, data[fig])


if __name__ == "__main__":
    sys.exit(main())
