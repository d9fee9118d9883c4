"""The local runner's throughput and CPU: bookings accepted per second, time until every delivery
has arrived at a loopback sink, CPU per booking and per delivered webhook.

Starts BIN (webhooks-local, release) on a free port with its embedded adapters, a sink on
another that answers 204 to every POST, and an endpoint of org `bench` pointing at it. Then
BOOKINGS (default 1000) bookings are posted by CLIENTS (default 8) keep-alive connections,
twice: first for org `quiet` (no endpoint: what a booking costs alone), then for `bench` (one
endpoint: one delivery each). CPU is the runner's, summed over its threads
(/proc/PID/task/*/schedstat, nanoseconds), so the clients' and the sink's do not count; a
delivery's CPU is the second phase's minus the first's, over BOOKINGS.

    python scripts/bench_local.py BIN   (run by `scripts/bench local`)
"""

import concurrent.futures
import http.client
import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

BOOKINGS = int(os.environ.get("BOOKINGS", "1000"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
BOOKING = json.dumps({
    "customerName": "Ada Lovelace", "customerEmail": "ada@example.com",
    "startTime": "2030-05-01T10:00:00Z", "endTime": "2030-05-01T11:00:00Z", "serviceId": "svc_bench",
})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.lock = threading.Lock()
        self.count = 0
        self.target = None
        self.reached = threading.Event()
        self.reached_at = None


class SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        server = self.server
        with server.lock:
            server.count += 1
            if server.target is not None and server.count >= server.target and server.reached_at is None:
                server.reached_at = time.perf_counter()
                server.reached.set()


def cpu_seconds(pid):
    """The process's CPU so far, over its live threads (schedstat's first field, ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def post_bookings(port, token, n):
    """Posts n bookings over CLIENTS keep-alive connections; (seconds, statuses)."""
    def worker(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        statuses = []
        for _ in range(count):
            connection.request("POST", "/bookings", body=BOOKING, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        connection.close()
        return statuses

    shares = [n // CLIENTS + (1 if i < n % CLIENTS else 0) for i in range(CLIENTS)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        statuses = [s for part in pool.map(worker, shares) for s in part]
    return time.perf_counter() - started, statuses, started


def main():
    binary = sys.argv[1]
    port = free_port()
    env = dict(os.environ, WEBHOOKS_LOCAL_JWT_SECRET="bench-only-secret", RUST_LOG="warn")
    runner = subprocess.Popen([binary, "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        token = lambda org: subprocess.check_output([binary, "token", "--org", org], env=env, text=True).strip()
        quiet, bench = token("quiet"), token("bench")
        sink = Sink()
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/webhooks", body=json.dumps({
            "url": f"http://127.0.0.1:{sink.server_address[1]}/hook", "events": ["booking.created"]}),
            headers={"Authorization": f"Bearer {bench}", "Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 201, response.status

        before = cpu_seconds(runner.pid)
        quiet_seconds, statuses, _ = post_bookings(port, quiet, BOOKINGS)
        assert all(s == 201 for s in statuses), set(statuses)
        time.sleep(0.5)
        booking_cpu = cpu_seconds(runner.pid) - before

        sink.target = BOOKINGS
        before = cpu_seconds(runner.pid)
        bench_seconds, statuses, started = post_bookings(port, bench, BOOKINGS)
        assert all(s == 201 for s in statuses), set(statuses)
        if not sink.reached.wait(timeout=300):
            raise SystemExit(f"only {sink.count} of {BOOKINGS} deliveries arrived")
        delivered_after = sink.reached_at - started
        time.sleep(0.5)
        total_cpu = cpu_seconds(runner.pid) - before
    finally:
        runner.terminate()
        runner.wait()
    result = {
        "bookings": BOOKINGS, "clients": CLIENTS,
        "bookings/s, no endpoint": BOOKINGS / quiet_seconds,
        "bookings/s, 1 endpoint": BOOKINGS / bench_seconds,
        "all deliveries arrived s": delivered_after,
        "cpu per booking us": booking_cpu / BOOKINGS * 1e6,
        "cpu per delivery us": max(0.0, total_cpu - booking_cpu) / BOOKINGS * 1e6,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
