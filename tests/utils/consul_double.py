"""A test double of the Consul agent's HTTP API: just the part msarch uses.

No Consul agent binary can be installed on these machines, so the
registration and lookup code is tested against this double; infra/compose.yaml
runs the real agent. It answers, shaped like Consul:

- PUT /v1/agent/service/register (keys matched case-insensitively, as Consul does)
- PUT /v1/agent/service/deregister/<id>
- GET /v1/agent/services
- GET /v1/health/service/<name>[?passing=1]: [{"Node", "Service", "Checks"}, ...]

Health: with `check_every_s`, the double runs each registered HTTP check itself
at that period (a new registration is critical until its first check passes,
as in Consul); without it, registrations are passing and a test sets a status
with `set_status`. DeregisterCriticalServiceAfter is recorded, not enforced.
It runs in threads of its own, so it keeps answering whatever the test's event
loop is doing, and `stop()`/`start()` make Consul unreachable and back on the same port.

Run as a program (`python consul_double.py --host 0.0.0.0 --port 8500 --check-every 2`)
it is the Consul of the local container stack (infra/compose.local.yaml).
"""

import argparse
import json
import signal
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from msarch.embedded import free_port

NODE = {
    "ID": "0e4a6b1c-double",
    "Node": "consul-double",
    "Address": "127.0.0.1",
    "Datacenter": "dc1",
}


def _lower_keys(value: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in value.items()}


class ConsulDouble:
    def __init__(
        self, check_every_s: float | None = None, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.check_every_s = check_every_s
        self.registrations: list[dict[str, Any]] = []
        """Every register payload received, as sent."""
        self.deregistrations: list[str] = []
        self.services: dict[str, dict[str, Any]] = {}
        """The registered services by id, keys lower-cased."""
        self.statuses: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
        self._server.daemon_threads = True
        self._stopping.clear()
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True)]
        if self.check_every_s is not None:
            self._threads.append(threading.Thread(target=self._run_checks, daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Consul goes away: connections are refused until start()."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> "ConsulDouble":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, service_id: str, name: str, port: int, status: str = "passing") -> None:
        """Register an instance directly, as if it had registered itself."""
        with self._lock:
            self.services[service_id] = {
                "id": service_id,
                "name": name,
                "address": "127.0.0.1",
                "port": port,
            }
            self.statuses[service_id] = status

    def set_status(self, service_id: str, status: str) -> None:
        with self._lock:
            self.statuses[service_id] = status

    def forget(self, service_id: str) -> None:
        """Lose a registration, as an agent restarted without its data would."""
        with self._lock:
            self.services.pop(service_id, None)
            self.statuses.pop(service_id, None)

    def instances_of(self, name: str, passing_only: bool = False) -> list[str]:
        with self._lock:
            return [
                sid
                for sid, service in self.services.items()
                if service["name"] == name
                and (not passing_only or self.statuses.get(sid) == "passing")
            ]

    # -- the HTTP API

    def _register(self, payload: dict[str, Any]) -> None:
        service = _lower_keys(payload)
        service_id = service.get("id") or service["name"]
        service["checks"] = [_lower_keys(c) for c in service.get("checks") or []]
        with self._lock:
            self.registrations.append(payload)
            self.services[service_id] = service
            self.statuses[service_id] = "critical" if self.check_every_s is not None else "passing"

    def _deregister(self, service_id: str) -> bool:
        with self._lock:
            self.deregistrations.append(service_id)
            self.statuses.pop(service_id, None)
            return self.services.pop(service_id, None) is not None

    def _agent_services(self) -> dict[str, Any]:
        with self._lock:
            return {
                sid: {"ID": sid, "Service": s["name"], "Port": s.get("port", 0)}
                for sid, s in self.services.items()
            }

    def _health(self, name: str, passing_only: bool) -> list[dict[str, Any]]:
        with self._lock:
            entries = []
            for sid, service in self.services.items():
                status = self.statuses.get(sid, "critical")
                if service["name"] != name or (passing_only and status != "passing"):
                    continue
                entries.append(
                    {
                        "Node": NODE,
                        "Service": {
                            "ID": sid,
                            "Service": name,
                            "Address": service.get("address", ""),
                            "Port": service.get("port", 0),
                            "Tags": service.get("tags") or [],
                            "Meta": service.get("meta") or {},
                        },
                        "Checks": [
                            {"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""},
                            {"CheckID": f"service:{sid}", "Status": status, "ServiceID": sid},
                        ],
                    }
                )
            return entries

    def _run_checks(self) -> None:
        assert self.check_every_s is not None
        while not self._stopping.wait(self.check_every_s):
            with self._lock:
                targets = [
                    (sid, c["http"])
                    for sid, s in self.services.items()
                    for c in s.get("checks") or []
                    if "http" in c
                ]
            for sid, url in targets:
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        status = "passing" if answer.status == 200 else "critical"
                except (urllib.error.URLError, OSError):
                    status = "critical"
                with self._lock:
                    if sid in self.statuses:
                        self.statuses[sid] = status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", "1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                path = urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if path == "/v1/agent/service/register":
                    double._register(json.loads(body))
                    self._answer(200, None)
                elif path.startswith("/v1/agent/service/deregister/"):
                    found = double._deregister(path.rsplit("/", 1)[1])
                    self._answer(200 if found else 404, None)
                else:
                    self._answer(404, None)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                if parts.path == "/v1/agent/services":
                    self._answer(200, double._agent_services())
                elif parts.path.startswith("/v1/health/service/"):
                    passing = query.get("passing", ["false"])[0] not in ("false", "0")
                    self._answer(200, double._health(parts.path.rsplit("/", 1)[1], passing))
                else:
                    self._answer(404, None)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="The Consul test double, until SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--check-every", type=float, default=2.0, help="seconds between checks")
    args = parser.parse_args()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # as PID 1 in a container, no default action
        signal.signal(sig, lambda *_: stopping.set())
    with ConsulDouble(args.check_every, args.port, args.host):
        print(f"Consul double on {args.host}:{args.port}, checks every {args.check_every:g} s")
        stopping.wait()


if __name__ == "__main__":
    main()
