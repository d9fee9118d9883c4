"""The delivery hot path and the AWS calls per operation, counted, with their cost.

Runs the `hot_path` example (functions/examples/hot_path.rs: the handlers the Lambdas run, on
moto) behind a forwarding proxy that counts the AWS calls going through it, then prints its
tables: calls per operation, the cost per million deliveries at AWS list prices, the hot path's
timings and CPU.

    python scripts/bench_hot_path.py EXAMPLE_BINARY    (run by `scripts/bench hot-path`)

The proxy:

Every request is forwarded as it is to UPSTREAM (moto) and recorded by service and operation
(from its `X-Amz-Target` header: DynamoDB, SQS and KMS all speak JSON over POST), with the
request units its body implies (below). `GET /__bench/counts` answers the tally since the last
such call and starts a new one. What is counted is what went over the wire, not what the code
meant to send.

Request units, for the cost figures: DynamoDB items are taken as at most 1 KB written and 4 KB
read (ours are: an endpoint, a message record, an attempt record), so a write is 1 write request
unit per item and 2 in a transaction, a strongly consistent read 1 read request unit per item
(0.5 eventually consistent, 2 in a transaction), a Query or Scan one 4 KB page; SQS and KMS bill
per request (an SQS batch of up to 10 entries under 64 KB is one request).
"""

import http.client
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import urllib.parse

SERVICES = {"DynamoDB_20120810": "DynamoDB", "AmazonSQS": "SQS", "TrentService": "KMS"}


def units(service, operation, body):
    """Request units of one call: DynamoDB's read or write units, else 1 request."""
    if service != "DynamoDB":
        return {"requests": 1}
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        request = {}
    consistent = 1.0 if request.get("ConsistentRead") else 0.5
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        return {"writeUnits": 1}
    if operation == "TransactWriteItems":
        return {"writeUnits": 2 * len(request.get("TransactItems", []))}
    if operation == "BatchWriteItem":
        return {"writeUnits": sum(len(v) for v in request.get("RequestItems", {}).values())}
    if operation == "GetItem":
        return {"readUnits": consistent}
    if operation == "BatchGetItem":
        items = request.get("RequestItems", {}).values()
        return {
            "readUnits": sum(
                len(t.get("Keys", [])) * (1.0 if t.get("ConsistentRead") else 0.5) for t in items
            )
        }
    if operation == "TransactGetItems":
        return {"readUnits": 2 * len(request.get("TransactItems", []))}
    if operation in ("Query", "Scan"):
        return {"readUnits": consistent}
    return {}


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}

    def add(self, service, operation, amounts):
        with self.lock:
            entry = self.calls.setdefault(f"{service} {operation}", {"calls": 0})
            entry["calls"] += 1
            for name, amount in amounts.items():
                entry[name] = entry.get(name, 0) + amount

    def take(self):
        with self.lock:
            calls, self.calls = self.calls, {}
        return calls


class Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, upstream):
        super().__init__(("127.0.0.1", 0), Handler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.tally = Tally()
        self.local = threading.local()

    def connection(self):
        if getattr(self.local, "connection", None) is None:
            self.local.connection = http.client.HTTPConnection(
                self.upstream.hostname, self.upstream.port, timeout=30
            )
        return self.local.connection


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/__bench/counts":
            body = json.dumps(self.server.tally.take()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return
        self.forward()

    def do_POST(self):
        self.forward()

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = self.headers.get("X-Amz-Target", "")
        prefix, _, operation = target.partition(".")
        service = SERVICES.get(prefix, prefix or "other")
        self.server.tally.add(service, operation or self.path, units(service, operation, body))
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        for attempt in range(2):
            connection = self.server.connection()
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                connection.close()
                self.server.local.connection = None
                if attempt:
                    raise
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


# AWS list prices, us-east-1, as published on the AWS pricing pages (2025): DynamoDB
# on-demand, SQS standard queues, KMS requests, Lambda on arm64. Free tiers left out.
PRICES = {
    "DynamoDB write unit": 0.625 / 1e6,
    "DynamoDB read unit": 0.125 / 1e6,
    "SQS request": 0.40 / 1e6,
    "KMS request": 0.03 / 1e4,
    "Lambda request": 0.20 / 1e6,
    "Lambda GB-second (arm64)": 0.0000133334,
}
DELIVERY_MEMORY_GB = 256 / 1024  # template.yaml, DeliverWebhooksFunction MemorySize


def totals(counts):
    """Calls, read and write units per service of one scenario's tally."""
    out = {}
    for name, entry in counts.items():
        service = name.split(" ")[0]
        t = out.setdefault(service, {"calls": 0, "readUnits": 0.0, "writeUnits": 0.0})
        t["calls"] += entry["calls"]
        t["readUnits"] += entry.get("readUnits", 0)
        t["writeUnits"] += entry.get("writeUnits", 0)
    return out


def cost(counts, lambda_requests=0.0, gb_seconds=0.0):
    t = totals(counts)
    dynamo = t.get("DynamoDB", {"readUnits": 0, "writeUnits": 0})
    return (
        dynamo["writeUnits"] * PRICES["DynamoDB write unit"]
        + dynamo["readUnits"] * PRICES["DynamoDB read unit"]
        + t.get("SQS", {"calls": 0})["calls"] * PRICES["SQS request"]
        + t.get("KMS", {"calls": 0})["calls"] * PRICES["KMS request"]
        + lambda_requests * PRICES["Lambda request"]
        + gb_seconds * PRICES["Lambda GB-second (arm64)"]
    )


def report(result):
    print("AWS calls per operation, counted at a proxy in front of moto (DynamoDB read/write units "
          "for items of at most 4 KB/1 KB)")
    print("| operation | DynamoDB calls (RRU / WRU) | SQS calls | KMS calls | calls |")
    print("|---|---:|---:|---:|---|")
    for scenario, counts in result.items():
        if not isinstance(counts, dict) or any(not isinstance(v, dict) for v in counts.values()):
            continue
        t = totals(counts)
        d = t.get("DynamoDB", {"calls": 0, "readUnits": 0, "writeUnits": 0})
        detail = ", ".join(f"{name} x{entry['calls']}" for name, entry in sorted(counts.items()))
        print(f"| {scenario} | {d['calls']} ({d['readUnits']:g} / {d['writeUnits']:g}) | "
              f"{t.get('SQS', {'calls': 0})['calls']} | {t.get('KMS', {'calls': 0})['calls']} | {detail} |")

    slow = result["200 ms subscriber"]
    cpu = result["cpu per delivery"]
    print()
    print(f"Delivery hot path on moto: a batch of 10 to one subscriber answering after 200 ms "
          f"(median of {slow['runs']})")
    print("| what | figure |")
    print("|---|---:|")
    print(f"| one delivery, whole batch | {slow['one delivery ms']:.0f} ms |")
    print(f"| batch of 10, whole batch | {slow['batch of 10 ms']:.0f} ms |")
    print(f"| batch of 10 / one delivery | {slow['ratio']:.2f}x |")
    print(f"| CPU per delivered webhook (deliver-webhooks' handler, {cpu['deliveries']:.0f} deliveries, "
          f"subscriber answering at once) | {cpu['us per delivery']:.0f} µs |")

    # Per delivery: a booking fanned out to 10 endpoints (its publish split 10 ways), its
    # delivery in a warm batch of 10, one create-booking and one deliver-webhooks invocation
    # split 10 ways, and the event source mapping's ReceiveMessage (at least one per batch).
    booking = result["booking to 10 endpoints"]
    batch = result["batch of 10 deliveries, 10 endpoints, warm"]
    retry = result["one failed attempt (retry scheduled)"]
    receive = {"SQS ReceiveMessage": {"calls": 1}}
    gb_seconds = slow["batch of 10 ms"] / 1000 * DELIVERY_MEMORY_GB
    per_delivery = (
        cost(booking, lambda_requests=1) + cost(batch, lambda_requests=1, gb_seconds=gb_seconds)
        + cost(receive)
    ) / 10
    print()
    print("Cost per million deliveries at list prices (us-east-1: DynamoDB on-demand $0.625 per "
          "million write and $0.125 per million read units, SQS $0.40 and Lambda $0.20 per million "
          "requests, KMS $0.03 per 10,000 requests, Lambda arm64 $0.0000133334 per GB-s)")
    print("| what | per million |")
    print("|---|---:|")
    print(f"| delivered first time, from bookings fanned out to 10 endpoints, 256 MB delivery "
          f"function held {slow['batch of 10 ms']:.0f} ms per batch of 10 | ${per_delivery * 1e6:.2f} |")
    print(f"| of which publishing (booking to 10 endpoints, per message) | "
          f"${cost(booking, lambda_requests=1) / 10 * 1e6:.2f} |")
    print(f"| of which delivering (warm batch of 10, per delivery) | "
          f"${(cost(batch, lambda_requests=1, gb_seconds=gb_seconds) + cost(receive)) / 10 * 1e6:.2f} |")
    print(f"| each retry (a failed attempt, its record and its re-send) | ${cost(retry) * 1e6:.2f} |")


def main():
    example = sys.argv[1]
    upstream = os.environ["WEBHOOKS_TEST_AWS_ENDPOINT"]
    proxy = Proxy(upstream)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = dict(os.environ, BENCH_COUNTER=f"http://127.0.0.1:{proxy.server_address[1]}")
    output = subprocess.run([example], env=env, stdout=subprocess.PIPE, check=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    if os.environ.get("BENCH_JSON"):
        with open(os.environ["BENCH_JSON"], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    report(result)


if __name__ == "__main__":
    main()
