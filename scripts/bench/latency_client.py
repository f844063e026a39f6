#!/usr/bin/env python3
"""A small bounded client for the latency-over-time plot.

usage: latency_client.py PORT SECONDS MAX_REQUESTS OUT.tsv [INTERVAL_MS]

Sends GET / on one keep-alive connection (http.client reconnects by itself after a
response with "Connection: close"), one request every INTERVAL_MS (default 1) or back to
back when a request takes longer, for at most SECONDS and MAX_REQUESTS. Each request is
written as "t_monotonic<TAB>latency_ms<TAB>ok<TAB>error": ok is 1 for a 200 with the
expected body; a failure (refused, reset, closed without a response, timeout, non-200)
is 0 with the exception's name, and the next request opens a new connection. Times are
CLOCK_MONOTONIC seconds, comparable with the driver's reload marks.
"""
import http.client
import sys
import time


def main():
    port, seconds, max_requests, out = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    interval = (float(sys.argv[5]) if len(sys.argv) > 5 else 1.0) / 1000.0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    rows = []
    start = time.monotonic()
    deadline = start + seconds
    next_at = start
    n = 0
    while n < max_requests:
        t = time.monotonic()
        if t >= deadline:
            break
        if t < next_at:
            time.sleep(next_at - t)
            t = time.monotonic()
        next_at = t + interval
        err = ""
        ok = 0
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            ok = 1 if resp.status == 200 and body == b"hello" else 0
            if not ok:
                err = "status_%d" % resp.status
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            err = type(e).__name__
            conn.close()
        t2 = time.monotonic()
        rows.append("%.6f\t%.3f\t%d\t%s\n" % (t, (t2 - t) * 1000.0, ok, err))
        n += 1
    conn.close()
    with open(out, "w") as f:
        f.writelines(rows)


if __name__ == "__main__":
    main()
