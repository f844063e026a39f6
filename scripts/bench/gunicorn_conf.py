# gunicorn hooks for the benchmarks: each worker reports READY (after it loaded the app)
# and the arbiter reports each reaped worker, as datagrams on $BENCH_EVENT_SOCKET, so the
# driver times gunicorn from events instead of guessing. Costs nothing per request.
# The socket is non-blocking: a full queue is retried for at most ~0.1 s, then the
# message is dropped, so a slow reader can never wedge gunicorn.
import os
import socket
import time

_ADDR = os.environ.get("BENCH_EVENT_SOCKET")


def _send(message):
    if not _ADDR:
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        for _ in range(100):
            try:
                s.sendto(message.encode(), _ADDR)
                return
            except BlockingIOError:
                time.sleep(0.001)
    except OSError:
        pass
    finally:
        s.close()


def when_ready(server):
    _send("master-ready %d" % os.getpid())


def post_worker_init(worker):
    _send("worker-ready %d" % worker.pid)


def child_exit(server, worker):
    _send("worker-exit %d" % worker.pid)
