"""Cold start of every Lambda binary under an emulated Lambda Runtime API.

For each binary: RUNS times (default 10), start the process with the environment Lambda gives
it, and time from process start to its first `GET /runtime/invocation/next` (init), then hand it
the function's sample event from events/ and time until it posts the response (first request).
Side by side with `hello_lambda`, a bare lambda_runtime function built the same way. Prints a
table of medians; figures, never assertions.

    python scripts/bench_init.py TARGET_DIR   (run by `scripts/bench init`, under with-moto)
"""

import http.server
import json
import os
import socketserver
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "10"))


class Emulator(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.reset(None)

    def reset(self, event):
        with self.lock:
            self.event = event
            self.first_next = None
            self.response_at = None
            self.served = False
            self.done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle(self):
        # A process killed mid-request is the end of its run, not an error.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        server = self.server
        if not self.path.endswith("/invocation/next"):
            self.send_error(404)
            return
        with server.lock:
            if server.first_next is None:
                server.first_next = time.perf_counter()
            serve = not server.served and server.event is not None
            server.served = server.served or serve
            event = server.event
        if not serve:
            # A second /next: the run is over; hold the process until it is killed.
            server.done.set()
            time.sleep(30)
            return
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-request")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            if self.server.response_at is None:
                self.server.response_at = time.perf_counter()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.done.set()


def sample_event(name):
    path = os.path.join(ROOT, "events", f"{name}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"hello": "world"}


def environment(port):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": os.environ.get("WEBHOOKS_TEST_AWS_ENDPOINT", "http://127.0.0.1:9"),
        "TABLE_NAME": "bench",
        "KMS_KEY_ID": "alias/bench",
        "DELIVERY_QUEUE_URL": "http://127.0.0.1:9/queue/bench",
        "DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/queue/bench-dlq",
    }
    return env


def measure(emulator, binary, name):
    inits, firsts = [], []
    for _ in range(RUNS):
        emulator.reset(sample_event(name))
        started = time.perf_counter()
        process = subprocess.Popen(
            [binary],
            env=environment(emulator.server_address[1]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        emulator.done.wait(timeout=20)
        process.kill()
        process.wait()
        if emulator.first_next is None:
            continue
        inits.append((emulator.first_next - started) * 1000)
        if emulator.response_at is not None:
            firsts.append((emulator.response_at - emulator.first_next) * 1000)
    return inits, firsts


def main():
    target = sys.argv[1]
    names = sorted(
        f[: -len(".rs")] for f in os.listdir(os.path.join(ROOT, "functions", "src", "bin"))
        if f.endswith(".rs") and f != "webhooks-local.rs"
    )
    emulator = Emulator()
    threading.Thread(target=emulator.serve_forever, daemon=True).start()
    rows = []
    hello_inits, hello_firsts = measure(emulator, os.path.join(target, "examples", "hello_lambda"), "hello")
    hello = statistics.median(hello_inits)
    rows.append(("hello_lambda (baseline)", hello, statistics.median(hello_firsts)))
    for name in names:
        inits, firsts = measure(emulator, os.path.join(target, name), name)
        init = statistics.median(inits) if inits else float("nan")
        first = statistics.median(firsts) if firsts else float("nan")
        rows.append((name, init, first))
    print(f"cold starts: median of {RUNS}, init = process start to first /next, first = event to response")
    print(f"{'function':<26} {'init ms':>9} {'x hello':>8} {'first ms':>9} {'init+first':>11}")
    for name, init, first in rows:
        print(f"{name:<26} {init:>9.1f} {init / hello:>8.2f} {first:>9.1f} {init + first:>11.1f}")


if __name__ == "__main__":
    main()
