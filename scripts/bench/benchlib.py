"""Servers under test and the ways the benchmarks observe them.

Every server (systempp, gunicorn, nginx) is started in its own session (process group) on
a free loopback port, with its own temporary directory, and is observed from events, not
by guessing:

* systempp: READY=1 / RELOADING=1 on a NOTIFY_SOCKET we bind, and the master's log lines
  "worker[k] pid P gG ready" (stderr, followed with inotify);
* gunicorn: datagrams from the hooks in gunicorn_conf.py (post_worker_init, child_exit);
* nginx: the master's error log at notice level ("start worker process P"), followed with
  inotify (nginx has no readiness signal: a worker counts as up once the master forked it);
* every process's exit: a pidfd (readable once the process has terminated, zombie or not).

All waits block in poll() on those descriptors, so the observer costs no CPU while it
waits and sees an event within microseconds. Times are CLOCK_MONOTONIC.
"""

import ctypes
import ctypes.util
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def now():
    return time.monotonic()


def ms(seconds):
    return round(seconds * 1000.0, 3)


def log(*args):
    print("[bench]", *args, flush=True)


class BenchError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# the run's context: temp dir, the app binary, the registry of process groups to clean up


class Ctx:
    def __init__(self):
        self.tmp = os.environ["BENCH_TMP"]
        self.app = os.environ["BENCH_APP"]
        self.prefix = os.environ.get("BENCH_PREFIX", "bench%d_" % os.getpid())
        self.quick = os.environ.get("BENCH_QUICK") == "1"
        self.results = os.path.join(self.tmp, "results")
        os.makedirs(self.results, exist_ok=True)
        self.registry = os.path.join(self.tmp, "pgids")
        self.servers = []
        self.counter = 0

    def next_name(self, tag):
        self.counter += 1
        return "%s%s%d_%d" % (self.prefix, tag, os.getpid() % 100000, self.counter)

    def register(self, server):
        self.servers.append(server)
        self._write_registry()

    def unregister(self, server):
        if server in self.servers:
            self.servers.remove(server)
        self._write_registry()

    def _write_registry(self):
        # Process groups still alive that the shell's trap must kill if we die.
        tmp = self.registry + ".tmp"
        with open(tmp, "w") as f:
            for s in self.servers:
                if s.proc is not None:
                    f.write("%d\n" % s.proc.pid)
        os.replace(tmp, self.registry)

    def cleanup(self):
        for s in list(self.servers):
            s.kill()

    def save(self, name, data):
        data["loadavg_end"] = read("/proc/loadavg").split()[:3]
        path = os.path.join(self.results, name + ".json")
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
        log("wrote", path)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------
# /proc


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def alive(pid):
    """Running (not a zombie, not reaped)."""
    try:
        stat = read("/proc/%d/stat" % pid, "rb")
    except OSError:
        return False
    return stat.rpartition(b")")[2].split()[0] != b"Z"


def tasks(pid):
    try:
        return [int(t) for t in os.listdir("/proc/%d/task" % pid)]
    except OSError:
        return []


def cpu_sample(pid):
    """CPU and wake-ups of a process, summed over its threads.

    ticks: utime+stime from /proc/PID/stat (1/CLK_TCK s); cpu_ns: sum_exec_runtime from
    /proc/PID/task/*/schedstat (ns, precise); vol/invol: context switches from
    /proc/PID/task/*/status (a voluntary switch is a sleep, i.e. one wake-up later)."""
    try:
        fields = read("/proc/%d/stat" % pid, "rb").rpartition(b")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
    except OSError:
        return None
    cpu_ns = vol = invol = 0
    for t in tasks(pid):
        try:
            cpu_ns += int(read("/proc/%d/task/%d/schedstat" % (pid, t)).split()[0])
            for line in read("/proc/%d/task/%d/status" % (pid, t)).splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
        except OSError:
            pass
    return {"ticks": ticks, "cpu_ns": cpu_ns, "vol": vol, "invol": invol}


def cpu_delta(a, b):
    return {k: b[k] - a[k] for k in a}


def mem_sample(pid):
    """USS = Private_Clean + Private_Dirty, PSS, RSS (kB) from /proc/PID/smaps_rollup."""
    out = {}
    try:
        for line in read("/proc/%d/smaps_rollup" % pid).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1])
    except OSError:
        return None
    return {"uss_kb": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0),
            "pss_kb": out.get("Pss", 0), "rss_kb": out.get("Rss", 0)}


def listener_inode(port):
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in read(path).splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    return int(f[9])
        except OSError:
            pass
    return None


def connections_held(pid, port):
    """How many established TCP connections to local `port` the process `pid` has open."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in read(path).splitlines()[1:]:
                f = line.split()
                if f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add("socket:[%s]" % f[9])
        except OSError:
            pass
    held = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                held += os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes
            except OSError:
                pass
    except OSError:
        return None
    return held


def busiest(pids, seconds=0.3):
    """The pid that used the most CPU over the next `seconds`."""
    if not pids:
        raise BenchError("no live worker to choose from")
    a = {pid: cpu_sample(pid) for pid in pids}
    time.sleep(seconds)
    b = {pid: cpu_sample(pid) for pid in pids}
    used = {pid: b[pid]["cpu_ns"] - a[pid]["cpu_ns"] for pid in pids if a.get(pid) and b.get(pid)}
    return max(used, key=used.get) if used else pids[len(pids) // 2]


def epoll_registrations(pid, port):
    """Where a process has the listening socket of `port` in its epoll instances, from
    /proc/PID/fdinfo: [{epoll_fd, events (hex), exclusive, nested}], nested meaning the
    epoll fd is itself registered in another epoll instance of the process."""
    inode = listener_inode(port)
    epolls = {}
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[eventpoll]":
                continue
            items = []
            for line in read("/proc/%d/fdinfo/%s" % (pid, fd)).splitlines():
                m = re.match(r"tfd:\s*(\d+)\s+events:\s*([0-9a-f]+).*ino:([0-9a-f]+)", line)
                if m:
                    items.append((int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)))
            epolls[int(fd)] = items
        except OSError:
            continue
    out = []
    for epfd, items in sorted(epolls.items()):
        for tfd, ev, ino in items:
            if ino == inode:
                nested = any(epfd in [t for t, _, _ in other] for e2, other in epolls.items() if e2 != epfd)
                out.append({"epoll_fd": epfd, "events": "%x" % ev, "exclusive": bool(ev & 0x10000000),
                            "nested": nested})
    return out


# ---------------------------------------------------------------------------------------
# waiting on descriptors


def wait_fds(fds, timeout):
    """Blocks until one of fds is readable or timeout (s) passes; returns the readable ones."""
    if timeout is not None and timeout < 0:
        timeout = 0
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    if not fds:
        time.sleep(timeout if timeout is not None else 0)
        return []
    events = p.poll(None if timeout is None else timeout * 1000.0)
    return [fd for fd, _ in events]


class PidWatch:
    """Exit times of a set of processes, from pidfds (readable once a process terminated)."""

    def __init__(self, pids):
        self.fds = {}
        self.gone = {}
        for pid in pids:
            try:
                self.fds[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                self.gone[pid] = now()

    def poll(self):
        if self.fds:
            ready = set(wait_fds(list(self.fds.values()), 0))
            t = now()
            for pid, fd in list(self.fds.items()):
                if fd in ready:
                    self.gone[pid] = t
                    os.close(fd)
                    del self.fds[pid]
        return not self.fds

    def fdlist(self):
        return list(self.fds.values())

    def last_gone(self):
        return max(self.gone.values()) if self.gone else None

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
IN_MODIFY = 0x2
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000


class LogTail:
    """New complete lines of a file; fileno() is an inotify fd readable when it grew."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""
        self.fd = None
        open(path, "ab").close()
        self.ino = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.ino < 0 or _libc.inotify_add_watch(self.ino, path.encode(), IN_MODIFY) < 0:
            raise BenchError("inotify on %s failed (errno %d)" % (path, ctypes.get_errno()))
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def fileno(self):
        return self.ino

    def lines(self):
        try:
            while os.read(self.ino, 65536):
                pass
        except BlockingIOError:
            pass
        out = []
        while True:
            chunk = os.pread(self.fd, 1 << 20, self.offset)
            if not chunk:
                break
            self.offset += len(chunk)
            data = self.partial + chunk
            parts = data.split(b"\n")
            self.partial = parts.pop()
            out.extend(p.decode(errors="replace") for p in parts)
        return out

    def close(self):
        for fd in (self.fd, self.ino):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd = self.ino = None


class EventSocket:
    """A unix datagram socket (NOTIFY_SOCKET, gunicorn's hooks) read by a thread, so it is
    drained at once whatever the driver is doing: senders block (sd_notify) or drop
    (our hooks) when a datagram queue holds net.unix.max_dgram_qlen messages. Each message
    is stamped when it arrives; fileno() is a pipe that becomes readable then."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.queue = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:  # shutdown by close(); senders never send empty datagrams
                return
            t = now()
            with self.lock:
                self.queue.append((t, data.decode(errors="replace")))
            try:
                os.write(self.wfd, b"x")
            except OSError:
                pass

    def fileno(self):
        return self.rfd

    def take(self):
        try:
            while os.read(self.rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self.lock:
            out, self.queue = self.queue, []
        return out

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=2)
        for fd in (self.rfd, self.wfd):
            os.close(fd)
        self.sock = None


def http_get(port, timeout=2.0, close=True):
    """One GET / on a new connection; True on a 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# servers


class Server:
    kind = "?"
    stop_signal = signal.SIGTERM
    stop_signal_name = "TERM"

    def __init__(self, ctx, workers, cpus=None, label=None):
        self.ctx = ctx
        self.workers = workers
        self.cpus = cpus
        self.label = label or "%s-%d" % (self.kind, workers)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=self.kind + ".", dir=ctx.tmp)
        self.sock_path = os.path.join(self.dir, "ev.sock")
        self.ev = EventSocket(self.sock_path)
        self.msgs = []    # (t, text) datagrams
        self.up = {}      # pid -> t the worker was seen up (READY, booted, forked)
        self.tails = []
        self.proc = None
        self.logfile = os.path.join(self.dir, "server.log")

    # to be specialised
    def command(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def on_msg(self, t, text):
        pass

    def on_line(self, t, line):
        pass

    def started(self):
        return len(self.up) >= self.workers

    def reload_done_extra(self, mark):
        return True

    # common
    def pump(self):
        for t, text in self.ev.take():
            self.msgs.append((t, text))
            self.on_msg(t, text)
        t = now()
        for tail in self.tails:
            for line in tail.lines():
                self.on_line(t, line)

    def fds(self):
        return [self.ev.fileno()] + [t.fileno() for t in self.tails]

    def wait(self, cond, timeout, extra=lambda: [], what="condition", exit_ok=False):
        """Pumps events until cond() holds; blocks in poll() on the event socket, the log
        tails and extra() (pidfds) in between, never spinning."""
        deadline = now() + timeout
        while True:
            self.pump()
            if cond():
                return now()
            left = deadline - now()
            if left <= 0:
                raise BenchError("%s: timed out after %.1f s waiting for %s" % (self.label, timeout, what))
            if not exit_ok and self.proc is not None and self.proc.poll() is not None:
                raise BenchError("%s: the server exited (code %s) while waiting for %s; log: %s"
                                 % (self.label, self.proc.returncode, what, self.tail_log()))
            wait_fds(self.fds() + extra(), min(left, 0.25))

    def tail_log(self, n=8):
        try:
            return " | ".join(read(self.logfile).splitlines()[-n:])
        except OSError:
            return ""

    def live_pids(self):
        return sorted(p for p in self.up if alive(p))

    def master_pid(self):
        return self.proc.pid

    def start(self, timeout=120):
        cmd = self.command()
        if self.cpus is not None:
            cmd = ["taskset", "-c", self.cpus] + cmd
        out = open(self.logfile, "ab")
        t0 = now()
        self.proc = subprocess.Popen(cmd, env=self.env(), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=out, cwd=self.dir, start_new_session=True)
        out.close()
        self.ctx.register(self)
        t_ready = self.wait(self.started, timeout, what="all workers up")
        t_serve = self.wait(lambda: http_get(self.port, 1.0), timeout, what="a 200 from GET /")
        return {"ready_ms": ms(t_ready - t0), "serving_ms": ms(t_serve - t0)}

    def reload(self, timeout=120):
        """SIGHUP until every old worker is gone and `workers` new ones are up."""
        self.pump()
        old = set(self.live_pids())
        if len(old) != self.workers:
            raise BenchError("%s: %d live workers before reload, expected %d" % (self.label, len(old), self.workers))
        watch = PidWatch(old)
        mark = len(self.msgs)
        t0 = now()
        os.kill(self.master_pid(), signal.SIGHUP)

        def new_up():
            return [p for p in self.up if p not in old and self.up[p] >= t0 and alive(p)]

        def done():
            return watch.poll() and len(new_up()) >= self.workers and self.reload_done_extra(mark)

        try:
            t1 = self.wait(done, timeout, watch.fdlist, what="reload to finish")
        finally:
            watch.close()
        new = sorted(t for p, t in self.up.items() if p not in old and t >= t0)[: self.workers]
        return {"total_ms": ms(t1 - t0), "new_up_ms": ms(new[-1] - t0) if new else None,
                "old_gone_ms": ms(watch.last_gone() - t0)}

    def respawn(self, timeout=60, victim=None):
        """SIGKILL one worker (the middle one unless given); time until a new one is up."""
        self.pump()
        before = set(self.up)
        victims = self.live_pids()
        victim = victim or victims[len(victims) // 2]
        t0 = now()
        os.kill(victim, signal.SIGKILL)
        t1 = self.wait(lambda: any(p not in before and alive(p) for p in self.up), timeout,
                       what="a replacement worker")
        # back to full strength before the next round
        self.wait(lambda: len(self.live_pids()) >= self.workers, timeout, what="full pool")
        return {"respawn_ms": ms(t1 - t0)}

    def stop(self, timeout=120):
        """Graceful stop; time until the master and every worker exited."""
        if self.proc is None:
            return None
        self.pump()
        watch = PidWatch(self.live_pids() + [self.master_pid()])
        t0 = now()
        os.kill(self.master_pid(), self.stop_signal)
        try:
            # keep pumping: a server blocked on a full event socket would never finish
            t1 = self.wait(watch.poll, timeout, watch.fdlist, what="the pool to exit", exit_ok=True)
        finally:
            watch.close()
        rc = self.proc.wait(timeout=10)
        self.proc = None
        self.ctx.unregister(self)
        self.close()
        return {"drain_ms": ms(t1 - t0), "exit_code": rc}

    def kill(self):
        """Last resort (also on errors): the whole process group, then reap."""
        if self.proc is not None:
            pid = self.proc.pid
            try:
                os.kill(pid, self.stop_signal)  # graceful first: the master cleans up after itself
                deadline = now() + 5
                while self.proc.poll() is None and now() < deadline:
                    self.pump()
                    wait_fds(self.fds(), 0.05)
            except ProcessLookupError:
                pass
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever is left of the group (workers too)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.after_kill(pid)
            self.proc = None
        self.ctx.unregister(self)
        self.close()

    def after_kill(self, pid):
        pass

    def close(self):
        for t in self.tails:
            t.close()
        self.tails = []
        self.ev.close()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


class Systempp(Server):
    kind = "systempp"
    READY_RE = re.compile(r"worker\[(\d+)\] pid (\d+) g(\d+) ready$")
    DONE_RE = re.compile(r"reload done in (\d+) ms")

    def __init__(self, ctx, workers, mode="fork", cpus=None, label=None, extra=()):
        self.mode = mode
        self.kind_label = "systempp" if mode == "fork" else "systempp-exec"
        super().__init__(ctx, workers, cpus, label or "%s-%d" % (self.kind_label, workers))
        self.name = ctx.next_name("s")
        self.extra = list(extra)
        self.reload_done_log = []
        self.tails.append(LogTail(self.logfile))

    def command(self):
        cmd = [self.ctx.app, "--workers", str(self.workers), "--bind", "127.0.0.1:%d" % self.port,
               "--name", self.name] + self.extra
        if self.mode == "exec":
            cmd += ["--reload-mode", "exec"]
        if os.geteuid() == 0:
            cmd += ["--allow-root"]  # as gunicorn's workers run here; nginx's switch to nobody
        return cmd

    def env(self):
        e = dict(os.environ)
        e["NOTIFY_SOCKET"] = self.sock_path
        return e

    def on_line(self, t, line):
        m = self.READY_RE.search(line)
        if m:
            self.up.setdefault(int(m.group(2)), t)
            return
        m = self.DONE_RE.search(line)
        if m:
            self.reload_done_log.append(int(m.group(1)))

    def ready_msgs(self, mark=0):
        return [t for t, text in self.msgs[mark:] if "READY=1" in text.split("\n")]

    def started(self):
        if self.workers == 0:
            return True  # inline: no master, no READY; serving is checked next
        return bool(self.ready_msgs())

    def reload_done_extra(self, mark):
        return bool(self.ready_msgs(mark))

    def live_pids(self):
        if self.workers == 0:
            return []
        return super().live_pids()

    def status(self):
        out = subprocess.run([self.ctx.app, "status", "--name", self.name, "--json"], capture_output=True,
                             text=True, timeout=20)
        if out.returncode != 0:
            raise BenchError("status --json failed: %s" % out.stderr.strip())
        return json.loads(out.stdout)

    def scale(self, n, timeout=120):
        """`app scale N` (it waits for the pool to reach N), then until status shows exactly N
        serving workers, all ready."""
        out = subprocess.run([self.ctx.app, "scale", str(n), "--name", self.name, "--timeout", str(timeout)],
                             capture_output=True, text=True, timeout=timeout + 10)
        if out.returncode != 0:
            raise BenchError("%s: scale %d failed: %s" % (self.label, n, out.stderr.strip()))

        def exactly():
            serving = [w for w in self.status()["workers"] if w.get("role", "serve") == "serve"]
            return len(serving) == n and all(w["state"] == "ready" for w in serving)
        self.wait(exactly, timeout, what="%d ready workers" % n)

    def after_kill(self, pid):
        # a master that was SIGKILLed leaves its control block behind
        try:
            os.unlink("/dev/shm/systempp.%s.%d" % (self.name, pid))
        except OSError:
            pass

    def control_block(self):
        path = "/dev/shm/systempp.%s.%d" % (self.name, self.master_pid())
        return os.stat(path).st_size

    def check_all_ready(self):
        """Cross-check after READY=1: status --json must show every worker ready."""
        st = self.status()
        ready = [w for w in st["workers"] if w["state"] == "ready"]
        return len(ready) >= self.workers, st


class Gunicorn(Server):
    kind = "gunicorn"

    def __init__(self, ctx, workers, cpus=None, label=None):
        super().__init__(ctx, workers, cpus, label)
        for f in ("hello_wsgi.py", "gunicorn_conf.py"):
            shutil.copy(os.path.join(HERE, f), self.dir)

    def command(self):
        return ["gunicorn", "--workers", str(self.workers), "--worker-class", "sync",
                "--bind", "127.0.0.1:%d" % self.port, "--config", os.path.join(self.dir, "gunicorn_conf.py"),
                "--chdir", self.dir, "--worker-tmp-dir", "/dev/shm", "--backlog", "2048",
                "--error-logfile", "-", "--log-level", "info", "hello_wsgi:app"]

    def env(self):
        e = dict(os.environ)
        e["BENCH_EVENT_SOCKET"] = self.sock_path
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        e.pop("NOTIFY_SOCKET", None)
        return e

    def on_msg(self, t, text):
        parts = text.split()
        if len(parts) == 2 and parts[0] == "worker-ready":
            self.up.setdefault(int(parts[1]), t)


class Nginx(Server):
    kind = "nginx"
    stop_signal = signal.SIGQUIT  # nginx's graceful shutdown (TERM is its fast stop)
    stop_signal_name = "QUIT"
    START_RE = re.compile(r"start worker process (\d+)")

    def __init__(self, ctx, workers, cpus=None, label=None):
        super().__init__(ctx, workers, cpus, label)
        self.errlog = os.path.join(self.dir, "error.log")
        conf = read(os.path.join(HERE, "nginx.conf.in"))
        conf = conf.replace("@WORKERS@", str(workers)).replace("@PREFIX@", self.dir).replace("@PORT@", str(self.port))
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.tails.append(LogTail(self.errlog))

    def command(self):
        return ["nginx", "-p", self.dir + "/", "-c", self.conf, "-e", self.errlog]

    def on_line(self, t, line):
        m = self.START_RE.search(line)
        if m:
            self.up.setdefault(int(m.group(1)), t)


def make(ctx, kind, workers, **kw):
    if kind == "systempp":
        return Systempp(ctx, workers, **kw)
    if kind == "systempp-exec":
        return Systempp(ctx, workers, mode="exec", **kw)
    if kind == "gunicorn":
        return Gunicorn(ctx, workers, **kw)
    if kind == "nginx":
        return Nginx(ctx, workers, **kw)
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------
# load


def wrk_command(port, conns, duration, threads, close=False, cpus=None, timeout_s=2):
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration, "--latency",
           "--timeout", "%ds" % timeout_s, "-s", os.path.join(HERE, "wrk_report.lua")]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append("http://127.0.0.1:%d/" % port)
    if cpus is not None:
        cmd = ["taskset", "-c", cpus] + cmd
    return cmd


def parse_wrk(text):
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["socket_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
            r["failed"] = r["socket_errors"] + r["status"]
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            return r
    raise BenchError("wrk printed no result: %s" % text[-500:])


def run_wrk(port, conns, duration, threads, close=False, cpus=None):
    cmd = wrk_command(port, conns, duration, threads, close, cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise BenchError("wrk failed (%d): %s" % (out.returncode, out.stderr.strip()))
    return parse_wrk(out.stdout)


# ---------------------------------------------------------------------------------------
# statistics


def summary(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(vals), "median": round(statistics.median(vals), 3), "min": round(min(vals), 3),
            "max": round(max(vals), 3)}
