"""Password flood against the agent's own port: does probing stay on time?

    .venv/bin/python -m bench.auth_flood.run [--before-rev REV] [--rounds 1] [--clients 200]
        [--attack-s 30] [--quiet-s 15] [--targets 8] [--interval-ms 1000] [--out DIR]

Per variant, in one run: the real agent daemon (`python -m agent run --config ... --listen
127.0.0.1:0 --web.config.file web.yml`, basic auth for user "prometheus" with a cost-10 bcrypt
hash) probes `--targets` copies of the simulated Sectra PACS (agent.simulator, in its own process)
every `--interval-ms`. A scraper GETs /metrics with the right password every second, as
Prometheus would (10 s timeout). After a warm-up, a quiet window, then `--clients` attackers
(bench/auth_flood/attack.py, own process) send wrong passwords for `--attack-s` seconds.

Start lateness is the agent's own `pacs_scheduler_start_lateness_seconds` histogram, differenced
over each window: p99 interpolated as histogram_quantile does, and the share of starts within
50 ms (the target: p99 <= 50 ms, i.e. >= 99 % within the 50 ms bucket).

Variants: "after" is `git archive HEAD` (agent/, probes/) of this repository, "before" the same
at `--before-rev` (the commit before the auth change); both run in their own processes from
temporary trees, the simulator from the "after" tree. Loopback only; every wait is bounded.
Writes DIR/auth-flood.json and DIR/report.md (default bench/out/auth_flood).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "prometheus", "bench-good-password"
TARGET_P99 = 0.050
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET_RE = re.compile(r'^pacs_scheduler_start_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$')


# -- source trees ---------------------------------------------------------------------------


def make_tree(dest: Path, rev: str) -> Path:
    """agent/ and probes/ as committed at `rev` (the working tree may hold others' edits)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "agent", "probes"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest


def git_rev(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()


# -- processes ------------------------------------------------------------------------------


def start_simulator(
    tree: Path, targets: int, interval_ms: int, log: Path
) -> tuple[subprocess.Popen, list]:
    code = (
        "import json, sys\n"
        "from agent.simulator import SimulatedPACS\n"
        "sim = SimulatedPACS().start()\n"
        f"docs = [sim.endpoint_config(f'sim-{{i}}', interval_ms={interval_ms}) "
        f"for i in range({targets})]\n"
        "print(json.dumps(docs), flush=True)\n"
        "sys.stdin.read()\n"
        "sim.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tree,
        env=env_for(tree),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    line = read_line(proc, 30, "simulator")
    return proc, json.loads(line)


def env_for(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(tree)
    return env


def read_line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out or not out[0]:
        proc.kill()
        raise SystemExit(f"{what} did not start within {timeout} s")
    return out[0]


def start_agent(tree: Path, config: Path, web: Path, log: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--web.config.file",
            str(web),
        ],
        cwd=tree,
        env=env_for(tree),
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    line = read_line(proc, 60, "agent")
    m = re.search(r"Listening on http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"unexpected agent output: {line!r}")
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    return round((b[0] - a[0]) / max(1.0, b[1] - a[1]), 3)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- the scraper ----------------------------------------------------------------------------


class Scraper(threading.Thread):
    """GET /metrics with the right password every second (keep-alive, 10 s timeout)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.log: list[tuple[float, int, float]] = []  # (monotonic start, status or 0, seconds)
        self.last_text = ""
        self.stopping = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def scrape(self) -> tuple[int, str]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self._conn.request("GET", "/metrics", headers={"Authorization": self.auth})
            r = self._conn.getresponse()
            return r.status, r.read().decode()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            return 0, ""

    def run(self) -> None:
        while not self.stopping.is_set():
            t0 = time.monotonic()
            status, text = self.scrape()
            with self._lock:
                self.log.append((t0, status, time.monotonic() - t0))
                if status == 200:
                    self.last_text = text
            self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - t0)))

    def snapshot(self, timeout: float = 15.0) -> tuple[float, dict[float, float]]:
        """A fresh histogram: waits (bounded) for the next successful scrape."""
        t_req = time.monotonic()
        end = t_req + timeout
        while time.monotonic() < end:
            with self._lock:
                done = [e for e in self.log if e[0] >= t_req and e[1] == 200]
                if done:
                    return done[0][0], buckets(self.last_text)
            time.sleep(0.05)
        raise SystemExit("no successful scrape for the snapshot")


def buckets(text: str) -> dict[float, float]:
    """The lateness histogram (le -> cumulative count), plus the missed runs under key -1."""
    out = {-1.0: 0.0}
    for line in text.splitlines():
        m = BUCKET_RE.match(line)
        if m:
            out[float(m.group(1))] = float(m.group(2))
        elif line.startswith("pacs_scheduler_missed_runs_total{"):
            out[-1.0] += float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantile(q: float, cum: dict[float, float]) -> float:
    les = sorted(le for le in cum if le >= 0)
    total = cum[les[-1]] if les else 0.0
    if total <= 0:
        return float("nan")
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le in les:
        c = cum[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1)
        prev_le, prev_c = le, c
    return les[-1]


def window(a: dict[float, float], b: dict[float, float]) -> dict[str, Any]:
    d = {le: b.get(le, 0.0) - a.get(le, 0.0) for le in b}
    n = d.get(math.inf, 0.0)
    within = d.get(0.05, 0.0)
    return {
        "starts": int(n),
        "p50_ms": round(histogram_quantile(0.5, d) * 1000, 1),
        "p99_ms": round(histogram_quantile(0.99, d) * 1000, 1),
        "within_50ms": round(within / n, 4) if n else None,
        "over_100ms": int(n - d.get(0.1, 0.0)),
        "missed_runs": int(d.get(-1.0, 0.0)),
        "met": bool(n) and within / n >= 0.99,
    }


def scrapes_between(s: Scraper, t0: float, t1: float) -> dict[str, Any]:
    xs = [e for e in s.log if t0 <= e[0] < t1]
    ok = [e[2] for e in xs if e[1] == 200]
    return {
        "scrapes": len(xs),
        "failed": sum(1 for e in xs if e[1] != 200),
        "statuses": sorted({e[1] for e in xs}),
        "max_ms": round(max(ok) * 1000, 1) if ok else None,
    }


# -- one variant ----------------------------------------------------------------------------


def run_variant(
    label: str,
    tree: Path,
    cfg: Path,
    web: Path,
    out: Path,
    a: argparse.Namespace,
) -> dict[str, Any]:
    print(f"[{label}] starting agent", flush=True)
    agent, port = start_agent(tree, cfg, web, out / f"agent-{label}.log")
    scraper = Scraper(port)
    scraper.start()
    try:
        scraper.snapshot(30)  # first successful scrape: the password is verified once
        time.sleep(a.warmup_s)  # warm-up: let every job run a few times
        tq0, quiet0 = scraper.snapshot()
        busy_q0 = machine_busy()
        cpu_q0 = cpu_seconds(agent.pid)
        time.sleep(a.quiet_s)
        ta0, attack0 = scraper.snapshot()
        busy_a0 = machine_busy()
        cpu0 = cpu_seconds(agent.pid)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"[{label}] {a.clients} attackers for {a.attack_s} s", flush=True)
        attack = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.auth_flood.attack",
                "--port",
                str(port),
                "--clients",
                str(a.clients),
                "--seconds",
                str(a.attack_s),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=a.attack_s + 60,
        )
        t_end = time.monotonic()
        busy_a1 = machine_busy()
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = cpu_seconds(agent.pid)
        ta1, attack1 = scraper.snapshot()
        result = {
            "label": label,
            "quiet": window(quiet0, attack0) | scrapes_between(scraper, tq0, ta0),
            "attack": window(attack0, attack1) | scrapes_between(scraper, ta0, t_end),
            "attack_snapshot_delay_s": round(ta1 - t_end, 2),
            "agent_cpu_cores_quiet": round((cpu0 - cpu_q0) / (ta0 - tq0), 2),
            "agent_cpu_cores_during_attack": round((cpu1 - cpu0) / (t_end - ta0), 2),
            # the attack process is the only child reaped in between
            "attacker_cpu_cores": round(
                (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / (t_end - ta0),
                2,
            ),
            "machine_busy": {
                "quiet": busy_between(busy_q0, busy_a0),
                "attack": busy_between(busy_a0, busy_a1),
            },
            "attackers": json.loads(attack.stdout.strip().splitlines()[-1])
            if attack.returncode == 0
            else {"error": attack.stderr[-2000:]},
        }
    finally:
        scraper.stopping.set()
        scraper.join(timeout=15)
        stop(agent)
    print(f"[{label}] {json.dumps(result)}", flush=True)
    return result


def report(doc: dict[str, Any]) -> str:
    lines = [
        f"Run {doc['started']} - {doc['finished']}; machine: {doc['machine']}; load average "
        f"before {doc['load_before']}, after {doc['load_after']}.",
        "",
        f"{doc['clients']} attackers x {doc['attack_s']} s, {doc['targets']} simulated targets "
        f"probed every {doc['interval_ms']} ms; before = auth code at {doc['before_rev']}, "
        f"after = {doc['after_rev']}.",
        "",
        "| variant | window | machine busy | starts | missed | lateness p50 | p99 | within 50 ms "
        "| > 100 ms | scrapes failed / total | slowest scrape | agent / attacker CPU (cores) "
        "| attacker responses |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        for w in ("quiet", "attack"):
            x = r[w]
            att = r["attackers"].get("responses", r["attackers"]) if w == "attack" else ""
            rate = f" ({r['attackers'].get('requests_per_s')}/s)" if w == "attack" else ""
            cpu = (
                f"{r['agent_cpu_cores_during_attack']} / {r['attacker_cpu_cores']}"
                if w == "attack"
                else f"{r['agent_cpu_cores_quiet']} / -"
            )
            busy = f"{r['machine_busy'][w]:.0%}"
            lines.append(
                f"| {r['label']} | {w} | {busy} | {x['starts']} | {x['missed_runs']} "
                f"| {x['p50_ms']} ms "
                f"| {x['p99_ms']} ms "
                f"| {x['within_50ms']:.2%} | {x['over_100ms']} | {x['failed']} / {x['scrapes']} "
                f"| {x['max_ms']} ms | {cpu} | {att}{rate} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before-rev", default=None, help="auth code before the change (git rev)")
    ap.add_argument("--after-dir", type=Path, help="a source tree instead of HEAD (trials)")
    ap.add_argument("--rounds", type=int, default=1, help="before/after pairs (ABBA order)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--attack-s", type=float, default=30.0)
    ap.add_argument("--quiet-s", type=float, default=15.0)
    ap.add_argument("--warmup-s", type=float, default=8.0)
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "auth_flood")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    import bcrypt  # the agent's own dependency

    tmp = Path(tempfile.mkdtemp(prefix="auth-flood-"))
    trees = {"after": a.after_dir or make_tree(tmp / "after", "HEAD")}
    if a.before_rev:
        trees["before"] = make_tree(tmp / "before", a.before_rev)
    web = tmp / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    web.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    sim, docs = start_simulator(trees["after"], a.targets, a.interval_ms, a.out / "simulator.log")
    cfg = tmp / "targets.json"
    cfg.write_text(json.dumps({"targets": docs, "agent": {"selfProbe": {"enabled": False}}}))
    order: list[str] = []
    for i in range(a.rounds):
        pair = ["before", "after"] if "before" in trees else ["after"]
        order += pair if i % 2 == 0 else pair[::-1]
    doc: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "load_before": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "clients": a.clients,
        "attack_s": a.attack_s,
        "targets": a.targets,
        "interval_ms": a.interval_ms,
        "before_rev": git_rev(a.before_rev) if a.before_rev else None,
        "after_rev": str(a.after_dir) if a.after_dir else git_rev("HEAD"),
        "results": [],
    }
    try:
        for label in order:
            doc["results"].append(run_variant(label, trees[label], cfg, web, a.out, a))
    finally:
        sim.stdin.close()
        stop(sim)
        shutil.rmtree(tmp, ignore_errors=True)
    doc["finished"] = datetime.now(UTC).strftime("%H:%M:%S UTC")
    doc["load_after"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    (a.out / "auth-flood.json").write_text(json.dumps(doc, indent=2) + "\n")
    (a.out / "report.md").write_text(report(doc))
    print(report(doc))
    after = [r for r in doc["results"] if r["label"] == "after"]
    sys.exit(0 if all(r["attack"]["met"] and not r["attack"]["failed"] for r in after) else 1)


if __name__ == "__main__":
    main()
