#!/usr/bin/env python3
"""Does EPOLLEXCLUSIVE still wake one process per connection when the epoll instance that
holds the exclusive registration is itself watched by another epoll (as when a private
epoll fd is handed to Asio's reactor)? Prints JSON: for each arrangement, the voluntary
context switches of all children per connection (1 is ideal; N children = everyone woke).

usage: epoll_probe.py [CHILDREN] [CONNECTIONS]   (loopback only, bounded: ~3 s)
"""
import json
import os
import resource
import select
import socket
import sys
import time


def run(nested, nchild, nconn):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    ls.setblocking(False)
    port = ls.getsockname()[1]
    r, w = os.pipe()
    kids = []
    for _ in range(nchild):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            inner = select.epoll()
            inner.register(ls.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            waiter = inner
            if nested:
                outer = select.epoll()
                outer.register(inner.fileno(), select.EPOLLIN)
                waiter = outer
            time.sleep(0.2)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
            deadline = time.monotonic() + 1.5 + nconn * 0.005
            accepted = 0
            while time.monotonic() < deadline:
                if not waiter.poll(0.25):
                    continue
                if nested:
                    inner.poll(0)
                while True:
                    try:
                        c, _ = ls.accept()
                        c.close()
                        accepted += 1
                    except BlockingIOError:
                        break
            cs = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before
            os.write(w, b"%d %d\n" % (cs, accepted))
            os._exit(0)
        kids.append(pid)
    os.close(w)
    time.sleep(0.5)
    for _ in range(nconn):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        time.sleep(0.005)
    for k in kids:
        os.waitpid(k, 0)
    data = [int(x) for x in os.read(r, 65536).split()]
    os.close(r)
    ls.close()
    # each child also wakes ~4 times a second from its poll timeout: subtract that
    idle = nchild * (1.5 + nconn * 0.005) * 4
    return {"children": nchild, "connections": nconn, "accepted": sum(data[1::2]),
            "wakeups_per_conn": round(max(0.0, sum(data[0::2]) - idle) / nconn, 2)}


def main():
    nchild = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    nconn = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(json.dumps({"direct": run(False, nchild, nconn), "nested": run(True, nchild, nconn)}))


if __name__ == "__main__":
    main()
