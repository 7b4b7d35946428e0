#!/usr/bin/env python3
"""
qeetgw's benchmark: qeetgw against the stack it replaces, on loopback.

Runs wrk against the peers below in front of one nginx upstream, alternating
the peers within each round so that drift on a shared machine cancels out:

  direct      wrk -> nginx upstream (the limit)
  nginx       wrk -> nginx reverse proxy (keep-alive pool) -> upstream
  express     wrk -> the shop's REAL Express gateway (micros/api-gateway of the
              qeetmart repository named by EXPRESS_SRC / --express-src, built
              at its pnpm-lock.yaml versions: bench/express_gateway.py) -> upstream;
              the reference of the headline ratios.  Skipped, saying so, when
              EXPRESS_SRC is not set
  express-reconstruction  wrk -> bench/peers/express, a reconstruction of the
              Express gateway's stack; never the reference, only when --peers names it
  qeetgw      wrk -> twistd qeetgw, everything on -> upstream
  qeetgw-w2   the same with --workers 2 (only when twistd qeetgw has --workers)
  qeetgw-metrics  qeetgw (one process) with METRICS_PORT set: its cost is this row against qeetgw
  qeetgw-w2-metrics  --workers 2 with METRICS_PORT set: its cost is this row against qeetgw-w2
  qeetgw-2inst    qeetgw with two instances behind every service: the cost of balancing

and writes bench/results/latest.json (plus a timestamped copy) and a Markdown
table, with the ratios qeetgw / peer of each round and their median.  ``make bench`` runs it; ``python bench/run.py --help`` lists the
options.  Standard library only, plus pyjwt when it is importable (the venv
has it).  Every process it starts is stopped by pid when it ends, on errors
and on Ctrl-C/SIGTERM too.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import ctypes
import datetime
import grp
import hashlib
import hmac
import http.client
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import express_gateway  # noqa: E402  (bench/express_gateway.py, next to this file)

RECONSTRUCTION_DIR = BENCH / "peers" / "express"
LUA = BENCH / "wrk" / "report.lua"

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# Plain base64 (letters and digits, no padding), so that every reader takes
# its decoding as the HMAC key: qeetgw (jjwt's decoder), the real Express
# gateway (which always base64url-decodes, leniently) and the reconstruction.
# A secret that is not base64 would give the real gateway another key.
JWT_SECRET = "cWVldGd3IGJlbmNoIEhTMjU2IGtleSwgMzYgYnl0ZXMhISEh"  # 36 bytes
WRONG_SECRET = "bm90IHRoZSBiZW5jaCBrZXksIGJ1dCAzNiBieXRlcyEhISEh"
ISSUER = "http://localhost:4001"
ORIGIN = "http://localhost:3000"
HUGE_BUDGET = 1_000_000_000

SERVICES = ("auth", "users", "products", "orders", "payments", "inventory")
SERVICE_URL_VARS = (
    "AUTH_SERVICE_URL",
    "USER_SERVICE_URL",
    "PRODUCT_SERVICE_URL",
    "ORDER_SERVICE_URL",
    "PAYMENT_SERVICE_URL",
    "INVENTORY_SERVICE_URL",
)


def log(message: str) -> None:
    """One progress line on stderr (stdout carries the results)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """Something the bench needs is missing or broke; the message says what."""


# --------------------------------------------------------------------------
# Processes: everything started is stopped by pid, whatever happens.

_libc = None


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child if the bench itself is killed (-9)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def read_stat(pid: int) -> Optional[Dict[str, int]]:
    """ppid, utime+stime and cutime+cstime (clock ticks) of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("latin-1")
    except OSError:
        return None
    fields = data.rpartition(")")[2].split()
    return {
        "ppid": int(fields[1]),
        "cpu": int(fields[11]) + int(fields[12]),
        "children_cpu": int(fields[13]) + int(fields[14]),
    }


def descendants(pid: int) -> List[int]:
    """The live descendants of ``pid`` (a scan of /proc: no CONFIG_PROC_CHILDREN needed)."""
    parents: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat["ppid"]
    found: List[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def status_kib(pid: int, field: str) -> Optional[int]:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (echo 5 > clear_refs, Linux 4.0+)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Processes:
    """The processes the bench started, stopped in reverse order by pid."""

    def __init__(self) -> None:
        self.started: List[Tuple[str, subprocess.Popen, List[int]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Dict[str, str],
        cwd: Path,
        output: Path,
    ) -> subprocess.Popen:
        """Start ``argv`` in a session of its own, stdout and stderr to ``output``."""
        with open(output, "ab") as out:
            process = subprocess.Popen(
                list(argv),
                env=env,
                cwd=str(cwd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started.append((name, process, []))
        return process

    def remember_children(self) -> None:
        """Note every started process's descendants, to stop stragglers too."""
        for _, process, known in self.started:
            if process.poll() is None:
                for pid in descendants(process.pid):
                    if pid not in known:
                        known.append(pid)

    def stop(self, process: subprocess.Popen, known: List[int], grace: float = 10.0) -> None:
        """SIGTERM ``process``, SIGKILL it after ``grace``; then any known child left."""
        if process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        for pid in known:
            try:
                os.kill(pid, 0)
            except OSError:
                continue
            # Still there after its parent stopped: ours, and orphaned.
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop_all(self) -> None:
        """Stop everything, newest first.  Safe to call twice."""
        self.remember_children()
        while self.started:
            name, process, known = self.started.pop()
            try:
                self.stop(process, known)
            except Exception as error:  # keep stopping the others
                log(f"could not stop {name} (pid {process.pid}): {error}")


PROCESSES = Processes()


def _on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# Tools: wrk, nginx, node/npm and the reconstruction's packages.


def find_nginx() -> Optional[str]:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def apt_install(packages: Sequence[str]) -> None:
    """apt-get install ``packages`` (apt-get update first when that fails)."""
    if not shutil.which("apt-get"):
        raise BenchError(f"missing {', '.join(packages)} and no apt-get to install them")
    prefix: List[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise BenchError(f"missing {', '.join(packages)}; install them (apt-get install -y {' '.join(packages)})")
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = prefix + ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    log("installing " + " ".join(packages) + " with apt-get")
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(prefix + ["apt-get", "update"], env=env, check=False)
        if subprocess.run(install, env=env).returncode != 0:
            raise BenchError("apt-get install " + " ".join(packages) + " failed")


def ensure_tools(install: bool, node: bool, reconstruction: bool) -> None:
    """Install wrk, nginx, node/npm (when a Node peer runs) and the reconstruction's packages when missing."""
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not find_nginx():
        missing.append("nginx")
    if node and (not shutil.which("node") or not shutil.which("npm")):
        missing.extend(["nodejs", "npm"])
    if missing:
        if not install:
            raise BenchError("missing: " + ", ".join(missing) + " (run without --no-install)")
        apt_install(missing)
    if not reconstruction:
        return
    modules = RECONSTRUCTION_DIR / "node_modules" / ".package-lock.json"
    lock = RECONSTRUCTION_DIR / "package-lock.json"
    if not modules.exists() or modules.stat().st_mtime < lock.stat().st_mtime:
        if not install:
            raise BenchError("the reconstruction's node_modules are missing (run without --no-install)")
        log("installing the Express reconstruction's packages (npm ci)")
        result = subprocess.run(
            ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=str(RECONSTRUCTION_DIR),
        )
        if result.returncode != 0:
            raise BenchError("npm ci in bench/peers/express failed")


# --------------------------------------------------------------------------
# Fixtures: bodies, tokens, ports, configuration files.


def small_body() -> bytes:
    """The ~300-byte JSON every service path answers (exactly 300 bytes)."""
    head = (
        '{"id":1,"sku":"QM-0001","name":"QeetMart bench product",'
        '"price":{"amount":1999,"currency":"EUR"},"stock":42,'
        '"tags":["bench","small","json"],"updatedAt":"2026-01-01T00:00:00Z","pad":"'
    )
    tail = '"}'
    return (head + "x" * (300 - len(head) - len(tail)) + tail).encode()


def json_of_size(size: int, key: str) -> bytes:
    head = '{"' + key + '":"'
    tail = '"}'
    return (head + "q" * (size - len(head) - len(tail)) + tail).encode()


def post_body() -> bytes:
    """A 1 KiB JSON request body (valid JSON: express.json() parses it)."""
    head = '{"productId":1,"quantity":2,"note":"'
    tail = '"}'
    filler = "".join(chr(ord("a") + i % 26) for i in range(1024 - len(head) - len(tail)))
    return (head + filler + tail).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign_hs256(claims: Dict[str, Any], secret: str) -> str:
    """An HS256 JWT keyed by ``secret``'s base64 decoding: with pyjwt when it is there, else by hand."""
    key = base64.b64decode(secret, validate=True)
    try:
        import jwt  # pyjwt, in the venv

        token = jwt.encode(claims, key, algorithm="HS256")
        return token if isinstance(token, str) else token.decode()
    except ImportError:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = hmac.new(key, signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(signature)}"


def access_claims(lifetime_s: int) -> Dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "bench@qeetmart.test",
        "userId": 1,
        "role": "USER",
        "tokenType": "access",
        "iss": ISSUER,
        "iat": now,
        "exp": now + lifetime_s,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_template(source: Path, target: Path, values: Dict[str, str]) -> None:
    text = source.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise BenchError(f"{source.name}: unfilled placeholders {sorted(set(left))}")
    target.write_text(text)


def user_directive() -> str:
    """nginx drops to 'nobody' when started as root; keep the current user."""
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


# --------------------------------------------------------------------------
# HTTP checks (stdlib http.client).


def http_request(
    port: int,
    method: str,
    path: str,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
    timeout: float = 10.0,
) -> Tuple[int, Dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


def wait_ready(
    name: str, process: subprocess.Popen, port: int, path: str, logfile: Path, timeout: float = 60.0
) -> None:
    """Wait until ``GET path`` on ``port`` answers (any status); fail if the process died."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{name} exited with status {process.returncode} at start-up:\n{tail(logfile)}")
        try:
            http_request(port, "GET", path, timeout=2)
            return
        except OSError as error:
            last_error = error
            time.sleep(0.1)
    raise BenchError(f"{name} did not answer on port {port} within {timeout:.0f}s ({last_error}):\n{tail(logfile)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# Peers and scenarios.


class Peer:
    """One thing wrk talks to: a port, the processes to measure, what it supports."""

    def __init__(
        self,
        key: str,
        label: str,
        port: int,
        processes: Dict[str, subprocess.Popen],
        prefix: str,
        scenarios: Iterable[str],
        is_qeetgw: bool = False,
    ) -> None:
        self.key = key
        self.label = label
        self.port = port
        # scenario -> the process (tree) to measure; "*" for the default.
        self.processes = processes
        self.prefix = prefix  # "/api/v1" for gateways, "" when going direct
        self.scenarios = set(scenarios)
        self.is_qeetgw = is_qeetgw
        # For the limited scenario a peer may use another port (Express's second instance).
        self.ports: Dict[str, int] = {}

    def process_for(self, scenario: str) -> Optional[subprocess.Popen]:
        return self.processes.get(scenario, self.processes.get("*"))

    def port_for(self, scenario: str) -> int:
        return self.ports.get(scenario, self.port)


class Scenario:
    def __init__(
        self,
        key: str,
        label: str,
        method: str,
        path: str,
        connections: int,
        token: str,
        expect: str,
        body_file: Optional[Path] = None,
        count_statuses: bool = False,
    ) -> None:
        self.key = key
        self.label = label
        self.method = method
        self.path = path  # below the peer's prefix: "/products/1"
        self.connections = connections
        self.token = token  # "valid" or "bad"
        self.expect = expect  # "2xx", "401", "429"
        self.body_file = body_file
        self.count_statuses = count_statuses


#: The tunnel scenario: WebSockets, each sending a message and waiting for
#: its echo, again and again (bench/wsload.py), through a peer to
#: bench/wsecho.py behind the nginx upstream.
TUNNEL_CONNECTIONS = 50
TUNNEL_MESSAGE_BYTES = 64


def measure_tunnel(
    python: str, peer: "Peer", token: str, duration: float, round_number: int
) -> Dict[str, Any]:
    """
    One run of the tunnel scenario through C{peer}: messages echoed per
    second, and the peer's CPU seconds per MiB it relayed (both ways).
    """
    path = peer.prefix + "/products/ws"
    argv = [python, str(BENCH / "wsload.py"), str(peer.port), path, str(TUNNEL_CONNECTIONS),
            str(TUNNEL_MESSAGE_BYTES), str(duration)]
    if peer.is_qeetgw:
        argv.append("Bearer " + token)
    # The CPU of qeetgw only: the direct peer's process is the nginx upstream.
    process = peer.process_for("tunnel") if peer.is_qeetgw else None
    before = tree_cpu_ticks(process.pid) if process is not None else None
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=duration + 60)
    after = tree_cpu_ticks(process.pid) if process is not None else None
    try:
        load = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"tunnel load through {peer.label} failed: {done.stderr.decode()[-500:]}")
    mib = (load["to_server"] + load["to_client"]) / (1024 * 1024)
    cpu_s = (after - before) / CLK_TCK if before is not None and after is not None else None
    return {
        "scenario": "tunnel",
        "peer": peer.key,
        "round": round_number,
        "messages": load["messages"],
        "seconds": load["seconds"],
        "messages_per_s": load["messages"] / load["seconds"] if load["seconds"] else 0.0,
        "mib_relayed": mib,
        "cpu_s": cpu_s,
        "cpu_s_per_mib": cpu_s / mib if cpu_s is not None and mib else None,
        "errors": load["errors"],
        "ok": load["errors"] == 0 and load["messages"] > 0,
    }


def tunnel_table(runs: List[Dict[str, Any]], peers: List["Peer"]) -> Optional[str]:
    """
    The tunnel scenario's table: each peer's median round, and qeetgw ÷
    direct per round.
    """
    tunnel = [r for r in runs if r["scenario"] == "tunnel"]
    if not tunnel:
        return None
    lines = [
        f"WebSocket tunnel: {TUNNEL_CONNECTIONS} connections, a {TUNNEL_MESSAGE_BYTES}-byte message and its echo "
        "at a time each (bench/wsload.py), to bench/wsecho.py behind the nginx upstream",
        "",
        "| peer | messages/s (median round) | CPU s per MiB relayed | ÷ direct, median of rounds (each) | result |",
        "|---|--:|--:|--:|---|",
    ]
    direct = {r["round"]: r["messages_per_s"] for r in tunnel if r["peer"] == "direct"}
    for peer in peers:
        mine = sorted((r for r in tunnel if r["peer"] == peer.key), key=lambda r: r["messages_per_s"])
        if not mine:
            continue
        middle = mine[len(mine) // 2]
        ratios = [r["messages_per_s"] / direct[r["round"]] for r in mine if direct.get(r["round"])]
        by_round = sorted((r for r in mine if direct.get(r["round"])), key=lambda r: r["round"])
        each = ", ".join(f"{r['messages_per_s'] / direct[r['round']]:.2f}" for r in by_round)
        ratio = f"{statistics.median(ratios):.2f}x ({each})" if ratios and peer.key != "direct" else "—"
        cpu = f"{middle['cpu_s_per_mib']:.3f}" if middle.get("cpu_s_per_mib") is not None else "—"
        ok = "ok" if all(r["ok"] for r in mine) else "FAIL"
        lines.append(f"| {peer.label} | {middle['messages_per_s']:,.0f} | {cpu} | {ratio} | {ok} |")
    return "\n".join(lines)


def tree_cpu_ticks(pid: int) -> Optional[int]:
    """utime+stime of ``pid`` and its live descendants, plus its reaped children's."""
    root = read_stat(pid)
    if root is None:
        return None
    total = root["cpu"] + root["children_cpu"]
    for child in descendants(pid):
        stat = read_stat(child)
        if stat is not None:
            total += stat["cpu"]
    return total


def machine_busy_ticks() -> int:
    """Busy clock ticks of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_by_process(pid: int) -> Dict[int, int]:
    """utime+stime (clock ticks) of ``pid`` and of each live descendant."""
    ticks: Dict[int, int] = {}
    for p in [pid] + descendants(pid):
        stat = read_stat(p)
        if stat is not None:
            ticks[p] = stat["cpu"]
    return ticks


def tree_peak_rss(pid: int) -> Dict[str, Optional[int]]:
    """VmHWM (KiB) of ``pid`` and its descendants: sum and max over the processes."""
    values = [v for v in (status_kib(p, "VmHWM") for p in [pid] + descendants(pid)) if v is not None]
    return {"sum": sum(values) if values else None, "max": max(values) if values else None, "processes": len(values)}


def tree_rss(pid: int) -> Optional[int]:
    values = [v for v in (status_kib(p, "VmRSS") for p in [pid] + descendants(pid)) if v is not None]
    return sum(values) if values else None


def wrk_command(
    scenario: Scenario, peer: Peer, tokens: Dict[str, str], duration: float, timeout_s: float
) -> List[str]:
    port = peer.port_for(scenario.key)
    url = f"http://127.0.0.1:{port}{peer.prefix}{scenario.path}"
    argv = [
        "wrk",
        "-t1",
        f"-c{scenario.connections}",
        f"-d{max(1, int(round(duration)))}s",
        f"--timeout={int(timeout_s)}s",
        "-s",
        str(LUA),
        "-H",
        f"Authorization: Bearer {tokens[scenario.token]}",
        "-H",
        f"Origin: {ORIGIN}",
        url,
        "--",
        f"method={scenario.method}",
    ]
    if scenario.body_file is not None:
        argv.append(f"body={scenario.body_file}")
    if scenario.count_statuses:
        argv.append("statuses=1")
    return argv


def run_wrk(argv: List[str], timeout: float) -> Dict[str, Any]:
    """Run wrk, return the JSON line report.lua printed."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        process.kill()
        process.wait()
        raise
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise BenchError(f"wrk gave no report (status {process.returncode}):\n{text}\n{err.decode(errors='replace')}")


def judge(scenario: Scenario, report: Dict[str, Any]) -> Dict[str, Any]:
    """How many responses had the expected outcome, and the failures."""
    errors = report["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    requests = report["requests"]
    statuses = {int(k): v for k, v in report.get("statuses", {}).items()}
    if scenario.expect == "2xx":
        # wrk counts statuses > 399 as errors.status; nothing else is expected.
        non_2xx = errors["status"] if not statuses else sum(v for k, v in statuses.items() if not 200 <= k < 300)
        expected = requests - non_2xx
        ok = requests > 0 and non_2xx == 0 and socket_errors == 0
    else:
        want = int(scenario.expect)
        non_2xx = sum(v for k, v in statuses.items() if not 200 <= k < 300)
        expected = statuses.get(want, 0)
        # The limited path lets its one request a window through.
        allowed_others = 2 if want == 429 else 0
        ok = requests > 0 and requests - expected <= allowed_others * 4 and socket_errors == 0
    return {"non_2xx": non_2xx, "expected": expected, "socket_errors": socket_errors, "ok": ok}


def measure(
    scenario: Scenario,
    peer: Peer,
    tokens: Dict[str, str],
    duration: float,
    warmup: float,
    upstream: subprocess.Popen,
) -> Dict[str, Any]:
    """A warm-up and one timed wrk run of ``scenario`` against ``peer``, with CPU and RSS."""
    timeout_s = 10
    if warmup > 0:
        run_wrk(wrk_command(scenario, peer, tokens, warmup, timeout_s), warmup + 30)
    process = peer.process_for(scenario.key)
    pid = process.pid if process is not None else None
    if process is not None and process.poll() is not None:
        raise BenchError(f"{peer.label} died (status {process.returncode})")
    rss_reset = False
    if pid is not None:
        rss_reset = all(reset_peak_rss(p) for p in [pid] + descendants(pid))
    cpu_before = tree_cpu_ticks(pid) if pid is not None else None
    by_process_before = tree_cpu_by_process(pid) if pid is not None else {}
    upstream_before = tree_cpu_ticks(upstream.pid)
    machine_before = machine_busy_ticks()
    wrk_before = children_cpu_seconds()
    started = time.monotonic()
    report = run_wrk(wrk_command(scenario, peer, tokens, duration, timeout_s), duration + 60)
    wall = time.monotonic() - started
    wrk_cpu = children_cpu_seconds() - wrk_before
    machine_cpu = (machine_busy_ticks() - machine_before) / CLK_TCK
    cpu_after = tree_cpu_ticks(pid) if pid is not None else None
    upstream_after = tree_cpu_ticks(upstream.pid)
    peak = tree_peak_rss(pid) if pid is not None else {"sum": None, "max": None, "processes": 0}
    by_process_after = tree_cpu_by_process(pid) if pid is not None else {}
    seconds = report["duration_us"] / 1e6
    requests = report["requests"]
    result: Dict[str, Any] = {
        "scenario": scenario.key,
        "peer": peer.key,
        "requests": requests,
        "duration_s": round(seconds, 3),
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": report["latency_us"]["p50"] / 1000,
        "p99_ms": report["latency_us"]["p99"] / 1000,
        "latency_ms": {k: v / 1000 for k, v in report["latency_us"].items()},
        "errors": report["errors"],
        "statuses": report.get("statuses", {}),
        "bytes": report["bytes"],
        "peak_rss_kib_sum": peak["sum"],
        "peak_rss_kib_max": peak["max"],
        "processes_measured": peak["processes"],
        "peak_rss_per_run": rss_reset,
    }
    if len(by_process_after) > 1:
        # How the work spread over a process tree (workers): CPU s and VmHWM KiB each.
        result["per_process"] = {
            str(p): {
                "cpu_s": (ticks - by_process_before.get(p, 0)) / CLK_TCK,
                "peak_rss_kib": status_kib(p, "VmHWM"),
            }
            for p, ticks in by_process_after.items()
        }
    if cpu_before is not None and cpu_after is not None and requests:
        cpu_s = (cpu_after - cpu_before) / CLK_TCK
        result["cpu_s"] = cpu_s
        result["cpu_s_per_10k"] = cpu_s / requests * 10_000
    upstream_cpu = 0.0
    if upstream_before is not None and upstream_after is not None:
        upstream_cpu = (upstream_after - upstream_before) / CLK_TCK
        result["upstream_cpu_share"] = upstream_cpu / wall
    # Cores busy with anything but wrk, the upstream and the peer: noise.
    peer_cpu = 0.0 if process is upstream else result.get("cpu_s", 0.0)
    result["wrk_cpu_share"] = wrk_cpu / wall
    result["other_cpu_share"] = max(0.0, machine_cpu - wrk_cpu - upstream_cpu - peer_cpu) / wall
    result.update(judge(scenario, report))
    return result


# --------------------------------------------------------------------------
# Start-up.


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="qeetgw-bench-"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.python = sys.executable
        self.twistd = str(Path(sys.executable).with_name("twistd"))
        self.small = small_body()
        self.big = json_of_size(MIB, "data")
        self.post = post_body()
        self.post_file = self.tmp / "post.json"
        self.post_file.write_bytes(self.post)
        self.peers: List[Peer] = []
        self.notes: List[str] = []
        self.express_build: Optional[Dict[str, Any]] = None

    def prepare_express(self, source: Optional[str], keys: List[str]) -> None:
        """Build (or find built) the real Express gateway; without EXPRESS_SRC, say it is skipped."""
        if "express" not in keys:
            return
        if not source:
            keys.remove("express")
            self.note(
                "the REAL Express gateway was skipped: EXPRESS_SRC is not set.  Point it at a qeetmart "
                "checkout or git directory (github.com/qeetgroup/qeetmart): make bench EXPRESS_SRC=/path/to/qeetmart, "
                "or bench/run.py --express-src /path/to/qeetmart.  No other peer stands in for it"
            )
            return
        env = self.base_env()
        try:
            self.express_build = express_gateway.build(Path(source).expanduser(), log, env)
        except express_gateway.ExpressBuildError as error:
            raise BenchError(f"the real Express gateway: {error}")
        built = self.express_build
        log(
            f"real Express gateway: commit {built['commit'][:12]} ({built['source_kind']}"
            f"{', with local changes' if built['source_dirty'] else ''}), {built['dir']}, "
            + ", ".join(f"{k} {v}" for k, v in built["versions"].items())
        )
        if built["mismatches"]:
            self.note("the real Express gateway's packages differ from its pnpm-lock.yaml: " + "; ".join(built["mismatches"]))
        else:
            self.note(
                f"the real Express gateway's {built['packages_installed']} installed packages are all at versions "
                "its pnpm-lock.yaml pins"
            )
        if built.get("entry_note"):
            self.note("the real Express gateway: " + built["entry_note"])
        self.note(
            "the real Express gateway forwards /api/v1/<service>/x as /x (http-proxy-middleware 3 sees the "
            "mount-stripped URL, so its pathRewrite never matches); the bench gives each *_SERVICE_URL the "
            "service's path so that the upstream sees /<service>/x as through the other peers"
        )
        self.note(
            "the real Express gateway has one rate limit for all of /api/ (RATE_LIMIT_MAX), none per route: "
            "its limited scenario runs on a second instance with RATE_LIMIT_MAX=1, as the reconstruction's does"
        )

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(text)

    # -- environment for the children: nothing inherited that could change them
    def base_env(self) -> Dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "TMPDIR")
        return {k: os.environ[k] for k in keep if k in os.environ}

    def start_upstreams(self) -> None:
        self.echo_port = free_port()
        self.echo = PROCESSES.start(
            "echo",
            [self.python, "-m", "qeetgw_dev.echo", "--host", "127.0.0.1", "--ports", str(self.echo_port), "--quiet"],
            self.base_env(),
            self.tmp,
            self.logs / "echo.log",
        )
        self.ws_port = free_port()
        self.wsecho = PROCESSES.start(
            "websocket echo",
            [self.python, str(BENCH / "wsecho.py"), str(self.ws_port)],
            self.base_env(),
            self.tmp,
            self.logs / "wsecho.log",
        )
        www = self.tmp / "www"
        www.mkdir()
        (www / "big.json").write_bytes(self.big)
        self.upstream_port = free_port()
        conf = self.tmp / "upstream.conf"
        render_template(
            BENCH / "nginx-upstream.conf",
            conf,
            {
                "PREFIX": str(self.tmp),
                "PORT": str(self.upstream_port),
                "ECHO_PORT": str(self.echo_port),
                "WS_PORT": str(self.ws_port),
                "SMALL_BODY": self.small.decode(),
                "USER_DIRECTIVE": user_directive(),
            },
        )
        nginx = find_nginx()
        assert nginx
        self.upstream = PROCESSES.start(
            "nginx upstream",
            [nginx, "-e", str(self.tmp / "upstream-start.log"), "-p", str(self.tmp), "-c", str(conf)],
            self.base_env(),
            self.tmp,
            self.logs / "nginx-upstream.log",
        )
        wait_ready("echo upstream", self.echo, self.echo_port, "/health", self.logs / "echo.log")
        wait_ready("nginx upstream", self.upstream, self.upstream_port, "/health", self.logs / "nginx-upstream.log")
        status, _, body = http_request(self.upstream_port, "GET", "/products/1")
        if status != 200 or body != self.small:
            raise BenchError(f"the nginx upstream answered {status} {body[:80]!r}")

    def start_peers(self, keys: Sequence[str]) -> None:
        upstream_url = f"http://127.0.0.1:{self.upstream_port}"
        all_scenarios = ["get50", "get1", "post1k", "big", "badtoken", "limited"]
        proxy_scenarios = ["get50", "get1", "post1k", "big"]
        if "direct" in keys:
            self.peers.append(
                Peer("direct", "direct (nginx upstream)", self.upstream_port, {"*": self.upstream}, "", proxy_scenarios)
            )
        if "nginx" in keys:
            port = free_port()
            conf = self.tmp / "proxy.conf"
            render_template(
                BENCH / "nginx-proxy.conf",
                conf,
                {
                    "PREFIX": str(self.tmp),
                    "PORT": str(port),
                    "UPSTREAM_PORT": str(self.upstream_port),
                    "USER_DIRECTIVE": user_directive(),
                },
            )
            process = PROCESSES.start(
                "nginx proxy",
                [find_nginx() or "nginx", "-e", str(self.tmp / "proxy-start.log"), "-p", str(self.tmp), "-c", str(conf)],
                self.base_env(),
                self.tmp,
                self.logs / "nginx-proxy.log",
            )
            wait_ready("nginx proxy", process, port, "/api/v1/products/1", self.logs / "nginx-proxy.log")
            self.peers.append(
                Peer("nginx", "nginx proxy", port, {"*": process}, "/api/v1", proxy_scenarios + ["limited"])
            )
        if "express" in keys and self.express_build is not None:
            built = self.express_build
            # The real gateway mounts each proxy with router.use('/api/v1/products', ...)
            # and http-proxy-middleware 3 sees the mount-stripped URL, so its
            # pathRewrite never matches and /api/v1/products/1 leaves as /1.  A
            # service URL with the service's path (HPM 3's documented remedy)
            # makes the upstream see /products/1, as through every other peer.
            env = self.gateway_env(upstream_url)
            for name, service in zip(SERVICE_URL_VARS, SERVICES):
                env[name] = f"{upstream_url}/{service}"
            self.start_node_peer(
                "express", f"Express gateway (real, {built['commit'][:7]})", ["node", built["entry"]],
                Path(built["dir"]), env, all_scenarios,
            )
        if "express-reconstruction" in keys:
            self.start_node_peer(
                "express-reconstruction", "Express reconstruction (not the reference)", ["node", "index.js"],
                RECONSTRUCTION_DIR, self.gateway_env(upstream_url), all_scenarios,
            )
        workers_supported = self.qeetgw_has_workers()
        variants = [
            ("qeetgw" if workers == 1 else f"qeetgw-w{workers}", workers, {})
            for workers in self.args.workers
        ]
        # One process with Prometheus metrics on: the metrics' cost is this
        # row against the plain one.
        variants.append(("qeetgw-metrics", 1, {"METRICS_PORT": f"tcp:{free_port()}:interface=127.0.0.1"}))
        # Two workers with metrics (their files, summed by the supervisor):
        # the cost is this row against qeetgw-w2.
        variants.append(("qeetgw-w2-metrics", 2, {"METRICS_PORT": f"tcp:{free_port()}:interface=127.0.0.1"}))
        # Two instances behind every service (the same nginx under two host
        # names): the cost of balancing is this row against the plain one.
        two = upstream_url + "," + upstream_url.replace("127.0.0.1", "localhost")
        variants.append(("qeetgw-2inst", 1, {name: two for name in SERVICE_URL_VARS}))
        for key, workers, extra in variants:
            if key not in keys:
                continue
            if workers > 1 and not workers_supported:
                self.notes.append(f"twistd qeetgw has no --workers option: the {workers}-worker row was skipped")
                log(self.notes[-1])
                continue
            port = free_port()
            env = self.base_env()
            env.update(self.gateway_env(upstream_url))
            env.update(
                {
                    "LOG_FORMAT": "json",
                    "RATE_LIMIT_STORE": "memory",
                    "RATE_LIMIT_ROUTES": "/api/v1/products/limited=1/60000",
                    **extra,
                }
            )
            argv = [self.twistd, "-n", "--pidfile=", "qeetgw", "--port", f"tcp:{port}:interface=127.0.0.1"]
            if workers > 1:
                argv += ["--workers", str(workers)]
            logfile = self.logs / f"{key}.log"
            # cwd: the temp dir, so no .env of the checkout is read.
            process = PROCESSES.start(key, argv, env, self.tmp, logfile)
            wait_ready(key, process, port, "/health", logfile)
            label = {
                "qeetgw": "qeetgw",
                "qeetgw-metrics": "qeetgw + metrics",
                "qeetgw-w2-metrics": "qeetgw --workers 2 + metrics",
                "qeetgw-2inst": "qeetgw, 2 instances a service",
            }.get(
                key, f"qeetgw --workers {workers}"
            )
            self.peers.append(Peer(key, label, port, {"*": process}, "/api/v1", all_scenarios, is_qeetgw=True))
        # Let workers finish starting before their pids are noted.
        time.sleep(0.5)
        PROCESSES.remember_children()

    def start_node_peer(
        self, key: str, label: str, argv: List[str], cwd: Path, gateway_env: Dict[str, str], scenarios: List[str]
    ) -> None:
        """
        An Express gateway, twice: one with the bench's huge budget, and one
        with RATE_LIMIT_MAX=1 for the limited scenario (its one limit covers
        every /api/ path; it has no limit per route).
        """
        port, limited_port = free_port(), free_port()
        env = self.base_env()
        env.update(gateway_env)
        env.update({"PORT": str(port), "HOST": "127.0.0.1", "NODE_ENV": "production"})
        main = PROCESSES.start(key, argv, env, cwd, self.logs / f"{key}.log")
        env_limited = dict(env, PORT=str(limited_port), RATE_LIMIT_MAX="1")
        limited = PROCESSES.start(f"{key} (max=1)", argv, env_limited, cwd, self.logs / f"{key}-limited.log")
        wait_ready(key, main, port, "/health", self.logs / f"{key}.log")
        wait_ready(f"{key} (max=1)", limited, limited_port, "/health", self.logs / f"{key}-limited.log")
        peer = Peer(key, label, port, {"*": main, "limited": limited}, "/api/v1", scenarios)
        peer.ports["limited"] = limited_port
        self.peers.append(peer)

    def qeetgw_has_workers(self) -> bool:
        result = subprocess.run(
            [self.twistd, "qeetgw", "--help"],
            cwd=str(self.tmp),
            env=self.base_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return "--workers" in result.stdout.decode(errors="replace")

    def gateway_env(self, upstream_url: str) -> Dict[str, str]:
        """The variables both gateways read (SPEC.md names)."""
        env = {
            "REQUIRE_AUTH": "true",
            "JWT_SECRET": JWT_SECRET,
            "JWT_ISSUER": ISSUER,
            "RATE_LIMIT_WINDOW_MS": "60000",
            "RATE_LIMIT_MAX": str(HUGE_BUDGET),
            "GATEWAY_PROXY_TIMEOUT_MS": "5000",
            "JSON_BODY_LIMIT": "1mb",
        }
        for name in SERVICE_URL_VARS:
            env[name] = upstream_url
        return env

    # -- correctness, once, before timing
    def verify(self, tokens: Dict[str, str]) -> Dict[str, Dict[str, Any]]:
        checks: Dict[str, Dict[str, Any]] = {}
        for peer in self.peers:
            auth = {"Authorization": f"Bearer {tokens['valid']}", "Origin": ORIGIN}
            result: Dict[str, Any] = {}
            status, _, body = http_request(peer.port, "GET", f"{peer.prefix}/products/1", auth)
            result["get"] = {"status": status, "ok": status == 200 and body == self.small}
            status, _, body = http_request(peer.port, "GET", f"{peer.prefix}/products/big", auth, timeout=30)
            result["big"] = {"status": status, "bytes": len(body), "ok": status == 200 and body == self.big}
            # Through to the echo upstream: the path and the token it received.
            status, _, body = http_request(peer.port, "GET", f"{peer.prefix}/products/echo", auth)
            echoed = {}
            if status == 200:
                try:
                    echoed = json.loads(body)
                except ValueError:
                    pass
            forwarded = [h.lower() for h in echoed.get("headers", {})]
            result["echo"] = {
                "status": status,
                "upstream_path": echoed.get("path"),
                "authorization_forwarded": "authorization" in forwarded,
                "ok": status == 200 and echoed.get("path") == "/products/echo" and "authorization" in forwarded,
            }
            post_headers = dict(auth, **{"Content-Type": "application/json"})
            started = time.monotonic()
            try:
                status, _, body = http_request(
                    peer.port, "POST", f"{peer.prefix}/products/echo", post_headers, self.post, timeout=15
                )
                received: Optional[int] = None
                same = False
                if status == 200:
                    echoed = json.loads(body)
                    received = echoed.get("bodyLength")
                    same = echoed.get("body", "").encode() == self.post
                result["post"] = {
                    "status": status,
                    "upstream_received_bytes": received,
                    "seconds": round(time.monotonic() - started, 2),
                    "ok": status == 200 and received == len(self.post) and same,
                }
            except (OSError, http.client.HTTPException, ValueError) as error:
                result["post"] = {"error": repr(error), "seconds": round(time.monotonic() - started, 2), "ok": False}
            if "badtoken" in peer.scenarios:
                bad = {"Authorization": f"Bearer {tokens['bad']}", "Origin": ORIGIN}
                status, _, _ = http_request(peer.port, "GET", f"{peer.prefix}/products/1", bad)
                result["badtoken"] = {"status": status, "ok": status == 401}
                status, _, _ = http_request(peer.port, "GET", f"{peer.prefix}/products/1", {"Origin": ORIGIN})
                result["notoken"] = {"status": status, "ok": status == 401}
            if "limited" in peer.scenarios:
                # A valid token past the limit: a 429 within five requests (each
                # limit allows one; workers with the memory store count alone).
                port = peer.port_for("limited")
                statuses: List[int] = []
                while len(statuses) < 5 and 429 not in statuses:
                    statuses.append(http_request(port, "GET", f"{peer.prefix}/products/limited", auth)[0])
                result["limited"] = {"statuses": statuses, "ok": statuses[-1] == 429}
            checks[peer.key] = result
            summary = ", ".join(f"{k} {'ok' if v['ok'] else 'FAIL'}" for k, v in result.items())
            log(f"check {peer.label}: {summary}")
            if not result["post"]["ok"]:
                log(f"  POST 1 KiB through {peer.label}: {json.dumps(result['post'])}")
        return checks

    def soak(self, tokens: Dict[str, str], scenario: Scenario, seconds: float, every: float) -> Optional[Dict[str, Any]]:
        peer = next((p for p in self.peers if p.key == "qeetgw"), None)
        if peer is None:
            return None
        process = peer.process_for("get50")
        assert process is not None
        log(f"soak: {seconds:.0f} s GET at {scenario.connections} connections on qeetgw, RSS every {every:.0f} s")
        argv = wrk_command(scenario, peer, tokens, seconds, 10)
        wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        samples: List[Tuple[float, Optional[int]]] = []
        started = time.monotonic()
        try:
            while wrk.poll() is None:
                samples.append((round(time.monotonic() - started, 1), tree_rss(process.pid)))
                deadline = time.monotonic() + every
                while wrk.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            out, _ = wrk.communicate(timeout=30)
        except BaseException:
            wrk.kill()
            wrk.wait()
            raise
        samples.append((round(time.monotonic() - started, 1), tree_rss(process.pid)))
        report = next(
            (json.loads(l[len("BENCH_JSON "):]) for l in out.decode().splitlines() if l.startswith("BENCH_JSON ")), None
        )
        values = [v for _, v in samples if v is not None]
        return {
            "seconds": seconds,
            "requests": report["requests"] if report else None,
            "rps": report["requests"] / (report["duration_us"] / 1e6) if report else None,
            "samples_kib": samples,
            "first_kib": values[0] if values else None,
            "last_kib": values[-1] if values else None,
            "max_kib": max(values) if values else None,
        }


# --------------------------------------------------------------------------
# Reporting.


def machine_info(bench: Bench) -> Dict[str, Any]:
    def run(argv: List[str]) -> str:
        try:
            result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
            return result.stdout.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import twisted

        twisted_version = twisted.__version__
    except ImportError:
        twisted_version = "?"
    try:
        import jwt

        pyjwt_version = jwt.__version__
    except ImportError:
        pyjwt_version = "not installed (HS256 by hand)"
    express: Optional[Dict[str, Any]] = None
    if bench.express_build is not None:
        built = bench.express_build
        express = {key: built.get(key) for key in (
            "commit", "source_kind", "source_dirty", "lock_sha256", "versions", "lock_versions", "mismatches",
            "entry", "entry_note", "cached")}
    try:
        qeetgw_commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "qeetgw"])
        if dirty and dirty != "?":
            qeetgw_commit += " (qeetgw/ modified)"
    except Exception:
        qeetgw_commit = "?"
    try:
        loadavg = open("/proc/loadavg").read().split()[:3]
    except OSError:
        loadavg = []
    return {
        "loadavg_at_start": loadavg,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": twisted_version,
        "pyjwt": pyjwt_version,
        "node": run(["node", "--version"]),
        "nginx": run([find_nginx() or "nginx", "-v"]).replace("nginx version: ", ""),
        "wrk": run(["wrk", "--version"]).splitlines()[0].split(" Copyright")[0] if shutil.which("wrk") else "?",
        "express_gateway": express,
        "qeetgw_commit": qeetgw_commit,
    }


def round_ratios(runs: List[Dict[str, Any]], reference: str = "qeetgw") -> Dict[str, Dict[str, Any]]:
    """
    scenario -> peer -> qeetgw ÷ peer for req/s and p99, in each round (the
    two ran minutes apart at most, under the same load) and the median of
    those per-round ratios: the figures to quote.
    """
    by_key = {(r["scenario"], r["peer"], r["round"]): r for r in runs}
    ratios: Dict[str, Dict[str, Any]] = {}
    for (scenario, peer, round_number), row in sorted(by_key.items()):
        mine = by_key.get((scenario, reference, round_number))
        if peer == reference or mine is None or not row["rps"] or not row["p99_ms"]:
            continue
        entry = ratios.setdefault(scenario, {}).setdefault(peer, {"rps_ratio_rounds": [], "p99_ratio_rounds": []})
        entry["rps_ratio_rounds"].append(mine["rps"] / row["rps"])
        entry["p99_ratio_rounds"].append(mine["p99_ms"] / row["p99_ms"])
    for peers in ratios.values():
        for entry in peers.values():
            entry["rps_ratio_median"] = statistics.median(entry["rps_ratio_rounds"])
            entry["p99_ratio_median"] = statistics.median(entry["p99_ratio_rounds"])
    return ratios


def fmt_ratio(entry: Optional[Dict[str, Any]], what: str) -> str:
    """``3.41x (3.30, 3.52)``: the median of the per-round ratios, then each round's."""
    if not entry:
        return "—"
    rounds = entry[f"{what}_ratio_rounds"]
    text = f"{entry[f'{what}_ratio_median']:.2f}x"
    return text + (" (" + ", ".join(f"{r:.2f}" for r in rounds) + ")" if len(rounds) > 1 else "")


def headline(results: Dict[str, Any]) -> str:
    """qeetgw against the real Express gateway, per scenario: the ratios the issue quotes."""
    express = next((p for p in results["peers"] if p["key"] == "express"), None)
    if express is None:
        return "No headline: the real Express gateway was not measured (see the notes)."
    lines = [
        f"qeetgw ÷ {express['label']}: median of the per-round ratios (each round's in brackets)",
        "",
        "| scenario | qeetgw req/s (best round) | Express req/s (best round) | qeetgw ÷ Express req/s "
        "| qeetgw ÷ Express p99 |",
        "|---|--:|--:|--:|--:|",
    ]
    for scenario in results["scenarios"]:
        rows = results["summary"].get(scenario["key"], {})
        entry = results["ratios_qeetgw_to_peer"].get(scenario["key"], {}).get("express")
        if "qeetgw" not in rows or "express" not in rows:
            continue
        lines.append(
            f"| {scenario['label']} | {fmt(rows['qeetgw']['rps'])} | {fmt(rows['express']['rps'])} | "
            f"{fmt_ratio(entry, 'rps')} | {fmt_ratio(entry, 'p99')} |"
        )
    return "\n".join(lines)


def pick(runs: List[Dict[str, Any]], how: str) -> Dict[str, Any]:
    """The run that stands for a peer and scenario: best or median requests/s."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    if how == "best":
        chosen = dict(ordered[-1])
    else:
        chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds_rps"] = [round(r["rps"], 1) for r in runs]
    chosen["ok"] = all(r["ok"] for r in runs)
    chosen["peak_rss_kib_sum"] = max((r["peak_rss_kib_sum"] or 0) for r in runs) or None
    return chosen


def fmt(value: Optional[float], digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def markdown(results: Dict[str, Any]) -> str:
    scenarios = results["scenarios"]
    summary = results["summary"]
    checks = results["checks"]
    peers = results["peers"]
    lines = [
        "| scenario | peer | req/s | p50 ms | p99 ms | non-2xx | peak RSS MiB | CPU s / 10k req "
        "| qeetgw ÷ peer req/s, median of rounds (each) | qeetgw ÷ peer p99, median (each) | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for scenario in scenarios:
        rows = summary.get(scenario["key"], {})
        q = rows.get("qeetgw")
        for peer in peers:
            row = rows.get(peer["key"])
            if row is None:
                continue
            rps_ratio = p99_ratio = "—"
            if q is not None and not peer["is_qeetgw"]:
                entry = results["ratios_qeetgw_to_peer"].get(scenario["key"], {}).get(peer["key"])
                rps_ratio, p99_ratio = fmt_ratio(entry, "rps"), fmt_ratio(entry, "p99")
            result = "ok" if row["ok"] else "FAIL"
            if scenario["key"] == "post1k":
                post = checks.get(peer["key"], {}).get("post", {})
                if not post.get("ok"):
                    got = post.get("upstream_received_bytes")
                    if post.get("error"):
                        why = post["error"]
                    elif got is None:
                        why = f"the upstream never got it: {post.get('status')} after {post.get('seconds')} s"
                    else:
                        why = f"the upstream got {got} of 1024 bytes"
                    result = f"FAIL: body lost ({why})"
            if not row["ok"] and result == "FAIL":
                bits = []
                if row["socket_errors"]:
                    bits.append(f"{row['socket_errors']} socket errors/timeouts")
                if row["statuses"]:
                    bits.append("statuses " + ", ".join(f"{k}×{v}" for k, v in sorted(row["statuses"].items())))
                elif row["non_2xx"]:
                    bits.append(f"{row['non_2xx']} non-2xx")
                result = "FAIL" + (": " + "; ".join(bits) if bits else "")
            elif row["ok"] and scenario["expect"] != "2xx":
                result = f"ok ({scenario['expect']}×{row['expected']:,})"
            rss = row["peak_rss_kib_sum"]
            lines.append(
                "| {s} | {p} | {rps} | {p50} | {p99} | {n} | {rss} | {cpu} | {rr} | {pr} | {res} |".format(
                    s=scenario["label"],
                    p=peer["label"],
                    rps=fmt(row["rps"]),
                    p50=fmt_ms(row["p50_ms"]),
                    p99=fmt_ms(row["p99_ms"]),
                    n=fmt(row["non_2xx"]),
                    rss=fmt(rss / 1024, 1) if rss and peer["key"] != "direct" else "—",
                    cpu=fmt(row.get("cpu_s_per_10k"), 2) if peer["key"] != "direct" else "—",
                    rr=rps_ratio,
                    pr=p99_ratio,
                    res=result,
                )
            )
    return "\n".join(lines)


def busiest_share(row: Dict[str, Any]) -> Optional[float]:
    """The busiest child process's share of the children's CPU (workers; the parent left out)."""
    per_process = row.get("per_process") or {}
    parent = min((int(p) for p in per_process), default=None)
    cpus = [v["cpu_s"] for p, v in per_process.items() if int(p) != parent]
    return max(cpus) / sum(cpus) if cpus and sum(cpus) > 0 else None


def workers_table(results: Dict[str, Any]) -> Optional[str]:
    keys = [p["key"] for p in results["peers"] if p["is_qeetgw"] and p["key"] != "qeetgw"]
    if not keys:
        return None
    header = " | ".join(f"{k} ÷ qeetgw req/s | {k}: busiest worker's CPU share" for k in keys)
    lines = [f"| scenario | {header} |", "|---|" + "--:|--:|" * len(keys)]
    for scenario in results["scenarios"]:
        rows = results["summary"].get(scenario["key"], {})
        one = rows.get("qeetgw")
        if one is None:
            continue
        cells = []
        for key in keys:
            row = rows.get(key)
            cells.append(f"{row['rps'] / one['rps']:.2f}x" if row and one["rps"] else "—")
            share = busiest_share(row) if row else None
            cells.append(f"{share:.0%}" if share is not None else "—")
        lines.append(f"| {scenario['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(machine: Dict[str, Any]) -> str:
    e = machine.get("express_gateway")
    if e:
        v = e["versions"]
        express = (
            f"real Express gateway qeetmart {e['commit'][:7]} (express {v.get('express', '?')}, "
            f"http-proxy-middleware {v.get('http-proxy-middleware', '?')}, helmet {v.get('helmet', '?')}, "
            f"express-rate-limit {v.get('express-rate-limit', '?')}, cors {v.get('cors', '?')}, "
            f"zod {v.get('zod', '?')}; {'as' if not e['mismatches'] else 'NOT all as'} its pnpm-lock.yaml pins)"
        )
    else:
        express = "real Express gateway not measured"
    load = machine.get("loadavg_at_start") or []
    return (
        f"{machine['nproc']} cores, {machine['cpu']}, Linux {machine['kernel']}; "
        f"load average at start {' '.join(load) or '?'}"
        + (f", at end {' '.join(machine['loadavg_at_end'])}" if machine.get("loadavg_at_end") else "")
        + "; "
        f"Python {machine['python']}, Twisted {machine['twisted']}, pyjwt {machine['pyjwt']}; "
        f"node {machine['node']}, {express}; nginx {machine['nginx']}; "
        f"{machine['wrk']}; qeetgw {machine['qeetgw_commit']}"
    )


# --------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="qeetgw against nginx and the real Express gateway, with wrk on loopback.",
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds of each timed wrk run (%(default)s)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up before each run, not counted (%(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every peer and scenario, alternating (%(default)s)")
    parser.add_argument("--pick", choices=("best", "median"), default="best",
                        help="which round stands for a peer: the best or the median requests/s (%(default)s)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections of the loaded scenarios (%(default)s)")
    parser.add_argument("--workers", default="1,2",
                        help="qeetgw worker counts to run, comma list; >1 only when twistd qeetgw has --workers (%(default)s)")
    parser.add_argument("--peers", default=None,
                        help="comma list of peers to run: direct,nginx,express,qeetgw,qeetgw-w2,"
                        "qeetgw-metrics,qeetgw-w2-metrics,qeetgw-2inst (all of these), and "
                        "express-reconstruction (bench/peers/express, only when named; never the reference). "
                        "express is the REAL gateway, built from --express-src")
    parser.add_argument("--express-src", default=os.environ.get("EXPRESS_SRC") or None,
                        help="a qeetmart checkout or git directory (github.com/qeetgroup/qeetmart) whose "
                        "micros/api-gateway is the real Express gateway; default $EXPRESS_SRC.  Without it the "
                        "express peer is skipped.  Built once into $XDG_CACHE_HOME/qeetgw-bench (~/.cache)")
    parser.add_argument("--scenarios", default=None,
                        help="comma list of scenarios: get50,get1,post1k,big,badtoken,limited,tunnel (all)")
    parser.add_argument("--soak", action="store_true", help="also the 60-second memory-flatness run on qeetgw")
    parser.add_argument("--soak-duration", type=float, default=60, help="seconds of the soak run (%(default)s)")
    parser.add_argument("--soak-every", type=float, default=5, help="seconds between RSS samples in the soak (%(default)s)")
    parser.add_argument("--output", type=Path, default=BENCH / "results", help="results directory (%(default)s)")
    parser.add_argument("--no-install", action="store_true", help="fail instead of installing wrk, nginx or npm packages")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args(argv)
    args.workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    if any(w < 1 for w in args.workers):
        parser.error("--workers: counts start at 1")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    # Explicitly: a shell starting us in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(PROCESSES.stop_all)
    all_peers = ["direct", "nginx", "express"] + [
        "qeetgw" if w == 1 else f"qeetgw-w{w}" for w in args.workers
    ] + ["qeetgw-metrics", "qeetgw-w2-metrics", "qeetgw-2inst"]
    peer_keys = [p.strip() for p in args.peers.split(",")] if args.peers else all_peers
    node = "express" in peer_keys or "express-reconstruction" in peer_keys
    try:
        ensure_tools(not args.no_install, node, "express-reconstruction" in peer_keys)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    bench = Bench(args)
    try:
        bench.prepare_express(args.express_src, peer_keys)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        shutil.rmtree(bench.tmp, ignore_errors=True)
        return 2
    tokens = {
        # Outlives the longest run; the real access tokens live 15 minutes.
        "valid": sign_hs256(access_claims(6 * 3600), JWT_SECRET),
        "bad": sign_hs256(access_claims(6 * 3600), WRONG_SECRET),
    }
    c = args.connections
    scenarios = [
        Scenario("get50", f"GET 300 B, {c} conn", "GET", "/products/1", c, "valid", "2xx"),
        Scenario("get1", "GET 300 B, 1 conn", "GET", "/products/1", 1, "valid", "2xx"),
        Scenario("post1k", f"POST 1 KiB, {c} conn", "POST", "/products/1", c, "valid", "2xx", bench.post_file),
        Scenario("big", f"GET 1 MiB, {c} conn", "GET", "/products/big", c, "valid", "2xx"),
        Scenario("badtoken", f"bad token → 401, {c} conn", "GET", "/products/1", c, "bad", "401", count_statuses=True),
        Scenario("limited", f"over the limit → 429, {c} conn", "GET", "/products/limited", c, "valid", "429",
                 count_statuses=True),
    ]
    run_tunnel = True
    if args.scenarios:
        wanted = {s.strip() for s in args.scenarios.split(",")}
        scenarios = [s for s in scenarios if s.key in wanted]
        run_tunnel = "tunnel" in wanted

    runs: List[Dict[str, Any]] = []
    exit_status = 0
    try:
        machine = machine_info(bench)
        log("machine: " + machine_line(machine))
        log(f"temporary directory {bench.tmp}")
        bench.start_upstreams()
        bench.start_peers(peer_keys)
        if not bench.peers:
            raise BenchError("no peer to measure")
        log("peers: " + ", ".join(f"{p.label} :{p.port}" for p in bench.peers))
        checks = bench.verify(tokens)

        per_run = args.warmup + args.duration
        planned = sum(1 for s in scenarios for p in bench.peers if s.key in p.scenarios) * args.rounds
        log(f"{planned} runs of {args.warmup:g}+{args.duration:g} s: about {planned * (per_run + 0.5) / 60:.1f} minutes")
        tunnel_peers = [p for p in bench.peers if p.key in ("direct", "qeetgw")] if run_tunnel else []
        tunnel_runs: List[Dict[str, Any]] = []
        for round_number in range(args.rounds):
            order = bench.peers if round_number % 2 == 0 else list(reversed(bench.peers))
            for peer in tunnel_peers if round_number % 2 == 0 else list(reversed(tunnel_peers)):
                result = measure_tunnel(bench.python, peer, tokens["valid"], args.duration, round_number + 1)
                tunnel_runs.append(result)
                log(
                    f"round {round_number + 1} tunnel   {peer.label:22} {result['messages_per_s']:>10,.0f} msg/s "
                    f"{'ok' if result['ok'] else 'FAIL'}"
                )
            for scenario in scenarios:
                for peer in order:
                    if scenario.key not in peer.scenarios:
                        continue
                    result = measure(scenario, peer, tokens, args.duration, args.warmup, bench.upstream)
                    result["round"] = round_number + 1
                    runs.append(result)
                    log(
                        f"round {round_number + 1} {scenario.key:8} {peer.label:22} {result['rps']:>10,.0f} req/s "
                        f"p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms "
                        f"non-2xx {result['non_2xx']} {'ok' if result['ok'] else 'FAIL'}"
                    )
        PROCESSES.remember_children()
        soak = None
        if args.soak:
            get = next((s for s in scenarios if s.key == "get50"), None) or Scenario(
                "get50", "GET", "GET", "/products/1", c, "valid", "2xx"
            )
            soak = bench.soak(tokens, get, args.soak_duration, args.soak_every)

        summary: Dict[str, Dict[str, Any]] = {}
        for scenario in scenarios:
            for peer in bench.peers:
                mine = [r for r in runs if r["scenario"] == scenario.key and r["peer"] == peer.key]
                if mine:
                    row = pick(mine, args.pick)
                    if scenario.key == "post1k" and not checks[peer.key]["post"]["ok"]:
                        # The timed POST hits nginx's "return 200", which never
                        # waits for the body; the echo check is what says whether
                        # the body arrived.
                        row["ok"] = False
                    summary.setdefault(scenario.key, {})[peer.key] = row
        ratios = round_ratios(runs)
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            machine["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
        except OSError:
            pass
        results = {
            "time": now.isoformat(timespec="seconds"),
            "machine": machine,
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "pick": args.pick,
                "connections": c,
                "wrk": "wrk -t1, --timeout 10s, bench/wrk/report.lua",
                "peak_rss": "VmHWM summed over the peer's process tree, reset before each run "
                "(clear_refs) when allowed; the table shows the largest over the rounds",
                "cpu": "utime+stime of the peer's process tree (reaped children included) during the timed run",
            },
            "peers": [
                {"key": p.key, "label": p.label, "is_qeetgw": p.is_qeetgw, "scenarios": sorted(p.scenarios)}
                for p in bench.peers
            ],
            "scenarios": [
                {"key": s.key, "label": s.label, "method": s.method, "path": s.path,
                 "connections": s.connections, "expect": s.expect}
                for s in scenarios
            ],
            "checks": checks,
            "runs": runs,
            "summary": summary,
            "ratios_qeetgw_to_peer": ratios,
            "soak": soak,
            "notes": bench.notes,
            "tunnel": tunnel_runs,
        }
        args.output.mkdir(parents=True, exist_ok=True)
        text = json.dumps(results, indent=2, sort_keys=False)
        (args.output / "latest.json").write_text(text)
        stamped = args.output / f"{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        stamped.write_text(text)

        print()
        print(f"Machine: {machine_line(machine)}")
        print(
            f"wrk -t1, {args.rounds} round(s) of {args.duration:g} s (after {args.warmup:g} s warm-up) per peer and "
            f"scenario, alternating peers; the {args.pick} round by req/s is shown."
        )
        print()
        print(headline(results))
        print()
        print(markdown(results))
        table = workers_table(results)
        if table:
            print()
            print(table)
        table = tunnel_table(tunnel_runs, bench.peers)
        if table:
            print()
            print(table)
        if soak:
            print()
            print(
                f"Soak: {soak['seconds']:g} s GET at {c} connections on qeetgw, {fmt(soak['rps'])} req/s; RSS "
                f"first {soak['first_kib'] / 1024:.1f} MiB, last {soak['last_kib'] / 1024:.1f} MiB, "
                f"max {soak['max_kib'] / 1024:.1f} MiB ({len(soak['samples_kib'])} samples every {args.soak_every:g} s)"
            )
        noisy = [r for r in runs if r.get("other_cpu_share", 0) > 0.25]
        if noisy:
            worst = max(r["other_cpu_share"] for r in noisy)
            bench.notes.append(
                f"other processes kept up to {worst:.2f} cores busy during {len(noisy)} of {len(runs)} runs "
                "(other_cpu_share in the JSON): those figures are noisy"
            )
            results["notes"] = bench.notes
            (args.output / "latest.json").write_text(json.dumps(results, indent=2))
            stamped.write_text(json.dumps(results, indent=2))
        for note in bench.notes:
            print(f"Note: {note}")
        print()
        print(f"Results: {args.output / 'latest.json'} and {stamped}")
        if not all(row["ok"] for rows in summary.values() for key, row in rows.items() if key.startswith("qeetgw")):
            log("a qeetgw run failed its expected outcome (see the table)")
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        exit_status = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        exit_status = 130
    finally:
        PROCESSES.stop_all()
        if args.keep_tmp:
            log(f"kept {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
