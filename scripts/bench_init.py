"""Cold starts, first requests, warm invokes and CPU of every Lambda binary, under an emulated
Lambda Runtime API, on moto.

For each binary: RUNS times (default 20), start the process with the environment Lambda gives
it, and time from process start to its first `GET /runtime/invocation/next` (init), then hand it
the function's sample event from events/ and time until it posts the response (first request).
Then one more process answers the event WARM more times (default 50): the median warm latency
(event handed out to response posted) and the CPU per warm invoke (the process's CPU, from
wait4, minus the median CPU of a cold run, over WARM). Side by side with `hello_lambda`, a bare
lambda_runtime function built the same way, started in turn with each function (one of its cold
starts before each of the function's), so that the ratio compares neighbours. The table, key and
queues the functions name exist on moto (created here as the tests create them), so a first
request makes the AWS calls it makes on AWS. Init instructions: callgrind's count from exec to
the first /next, the figure that does not move with the machine's load. Prints a table of
medians; figures, never assertions.

    python scripts/bench_init.py TARGET_DIR [NAME...]   (run by `scripts/bench init`, under with-moto)
"""

import http.server
import json
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(os.environ.get("RUNS", "20"))
WARM = int(os.environ.get("WARM", "50"))


class Emulator(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.reset(None, 0)

    def reset(self, event, invokes, refuse=False):
        with self.lock:
            self.refuse = refuse
            self.event = event
            self.left = invokes
            self.first_next = None
            self.handed_out = None
            self.latencies = []
            self.done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    # Keep-alive, as Lambda's Runtime API: a connection per request would be the emulator's
    # cost in every figure.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

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
        if server.refuse:
            # Ends the process: lambda_runtime exits when /next fails.
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with server.lock:
            if server.first_next is None:
                server.first_next = time.perf_counter()
            serve = server.left > 0 and server.event is not None
            if serve:
                server.left -= 1
            event = server.event
        if not serve:
            # The run is over; hold the process until it is killed.
            server.done.set()
            time.sleep(30)
            return
        body = json.dumps(event).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with server.lock:
            server.handed_out = time.perf_counter()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        now = time.perf_counter()
        with self.server.lock:
            self.server.latencies.append(now - self.server.handed_out)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def sample_event(name):
    path = os.path.join(ROOT, "events", f"{name}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {"hello": "world"}


def create_resources(endpoint):
    """The table, key and queues, as common::testing creates them for the tests."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    suffix = uuid.uuid4().hex[:8]
    table = f"bench-{suffix}"
    session.client("dynamodb", endpoint_url=endpoint).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": t}
            for n, t in (("PK", "S"), ("SK", "S"), ("outbox", "S"), ("pendingSince", "N"))
        ],
        GlobalSecondaryIndexes=[{
            "IndexName": "pending-events",
            "KeySchema": [{"AttributeName": "outbox", "KeyType": "HASH"}, {"AttributeName": "pendingSince", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
    key = session.client("kms", endpoint_url=endpoint).create_key()["KeyMetadata"]["KeyId"]
    sqs = session.client("sqs", endpoint_url=endpoint)
    dlq = sqs.create_queue(QueueName=f"bench-dlq-{suffix}")["QueueUrl"]
    queue = sqs.create_queue(QueueName=f"bench-delivery-{suffix}")["QueueUrl"]
    return {"TABLE_NAME": table, "KMS_KEY_ID": key, "DELIVERY_QUEUE_URL": queue, "DEAD_LETTER_QUEUE_URL": dlq}


def environment(port, resources):
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
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": os.environ["WEBHOOKS_TEST_AWS_ENDPOINT"],
        "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOKS_ALLOW_INSECURE_URLS": "true",
    }
    env.update(resources)
    return env


def run_once(emulator, binary, event, invokes, env):
    """One process serving `invokes` events: (init s, latencies s, CPU s) or None."""
    emulator.reset(event, invokes)
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    emulator.done.wait(timeout=120)
    process.kill()
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = -9
    if emulator.first_next is None:
        return None
    return (emulator.first_next - started, list(emulator.latencies), usage.ru_utime + usage.ru_stime)


def init_instructions(emulator, binary, env):
    """Instructions from exec to the first /next (callgrind: the same count run after run,
    whatever else the machine is doing), or None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    emulator.reset(None, 0, refuse=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        with open(out, encoding="utf-8") as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
    return None


def measure(emulator, binary, name, resources, baseline=None):
    """Medians of RUNS cold starts; with `baseline`, each cold start follows one of the
    baseline's, and `baseline_init` is the median of those: a ratio of two neighbours, which
    drift in the machine's speed over the run does not skew."""
    env = environment(emulator.server_address[1], resources)
    event = sample_event(name)
    inits, firsts, cold_cpu, baseline_inits = [], [], [], []
    for _ in range(RUNS):
        if baseline is not None:
            paired = run_once(emulator, baseline, sample_event("hello"), 1, env)
            if paired is not None:
                baseline_inits.append(paired[0] * 1000)
        result = run_once(emulator, binary, event, 1, env)
        if result is None:
            continue
        init, latencies, cpu = result
        inits.append(init * 1000)
        if latencies:
            firsts.append(latencies[0] * 1000)
        cold_cpu.append(cpu)
    warm = run_once(emulator, binary, event, 1 + WARM, env)
    instructions = init_instructions(emulator, binary, env)
    median = lambda xs: statistics.median(xs) if xs else float("nan")
    warm_ms, warm_cpu_us = float("nan"), float("nan")
    if warm is not None and len(warm[1]) > 1:
        warm_ms = median([x * 1000 for x in warm[1][1:]])
        warm_cpu_us = max(0.0, warm[2] - median(cold_cpu)) / (len(warm[1]) - 1) * 1e6
    return {
        "init": median(inits),
        "first": median(firsts),
        "cold_cpu_ms": median(cold_cpu) * 1000,
        "warm_ms": warm_ms,
        "warm_cpu_us": warm_cpu_us,
        "init_instructions": instructions,
        "baseline_init": median(baseline_inits) if baseline_inits else median(inits),
    }


def main():
    target = sys.argv[1]
    names = sys.argv[2:] or sorted(
        f[: -len(".rs")] for f in os.listdir(os.path.join(ROOT, "functions", "src", "bin"))
        if f.endswith(".rs") and f != "webhooks-local.rs"
    )
    resources = create_resources(os.environ["WEBHOOKS_TEST_AWS_ENDPOINT"])
    emulator = Emulator()
    threading.Thread(target=emulator.serve_forever, daemon=True).start()
    hello_binary = os.path.join(target, "examples", "hello_lambda")
    rows = [("hello_lambda (baseline)", measure(emulator, hello_binary, "hello", resources))]
    for name in names:
        rows.append((name, measure(emulator, os.path.join(target, name), name, resources, hello_binary)))
    results = {name: row for name, row in rows}
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(f"Lambda binaries under an emulated Runtime API, on moto: median of {RUNS} cold starts "
          f"(init = process start to first /next; x hello = against the median of the baseline's "
          f"cold starts made in turn with them; first = first event to its response; cold CPU = "
          f"init and first request), then {WARM} warm invokes of the sample event; init instructions "
          f"from callgrind (exec to the first /next)")
    print("| function | init ms | x hello | init instructions | first request ms | init + first ms | cold CPU ms | warm ms | warm CPU µs/invoke |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        instructions = f"{r['init_instructions'] / 1e6:.2f} M" if r["init_instructions"] else "n/a"
        print(f"| {name} | {r['init']:.1f} | {r['init'] / r['baseline_init']:.2f} | {instructions} | {r['first']:.1f} | "
              f"{r['init'] + r['first']:.1f} | {r['cold_cpu_ms']:.1f} | {r['warm_ms']:.2f} | {r['warm_cpu_us']:.0f} |")


if __name__ == "__main__":
    main()
