"""Fuzzing: schemathesis against every app's OpenAPI, through the app's own sidecar with the Dapr API token (and, for
the gateway, a client's API key), on the whole stack (tests.integration.full_stack: mTLS, access control, Redis).

    python -m bench.fuzz [--cases 1000] [--seed 0] [--apps gateway vision ...] [--add]

For each app it runs schemathesis's examples, coverage and fuzzing phases (positive and negative data) with the checks
that no answer is a 5xx and that status codes, content types and bodies are what the OpenAPI says, again with the
next seed until at least `--cases` test cases were generated. Writes bench/results/fuzz.{json,md}: per app, the cases
generated and the failures of each check (none is the goal); what schemathesis said of a failing round goes to
.data/fuzz/<app>-<seed>.txt. With --add, the apps' results are added to those fuzz.json has of the others.
"""

import argparse
import json
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.full_stack import APPS, FullStack, start_full_stack  # noqa: E402
from tests.integration.stack import Stack  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# schemathesis's own account of the rounds that failed, with curl commands that reproduce each failure.
LOGS = ROOT / ".data" / "fuzz"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PHASES = "examples,coverage,fuzzing"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def fuzz_app(
    full: FullStack, app: str, headers: dict[str, str], cases: int, seed: int, work: Path, phases: str = PHASES
) -> dict:
    """Rounds of schemathesis on `app` (seed, seed + 1, ...) until `cases` test cases were generated."""
    base = full.url(app, "")
    operations = sum(len(path) for path in httpx.get(f"{base}openapi.json", headers=headers).json()["paths"].values())
    per_operation = math.ceil(cases / operations)
    generated, failures, rounds = 0, {}, []
    while generated < cases:
        report = work / f"{app}-{seed}.json"
        command = [str(SCHEMATHESIS), "run", f"{base}openapi.json", "--url", base.rstrip("/"), "--checks", CHECKS]
        command += ["--phases", phases, "--max-examples", str(per_operation), "--seed", str(seed)]
        command += ["--workers", "2", "--no-shrink", "--report", "json", "--report-json-path", str(report)]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        run = subprocess.run(command, capture_output=True, text=True, cwd=work)  # its cache goes there too
        result = json.loads(report.read_text())
        generated += result["test_cases"]["generated"]
        for failure in result["failures"]:
            key = f"{failure['code']} {failure['title']}"
            failures[key] = failures.get(key, 0) + failure["count"]
        errors = [error["title"] for error in result["errors"]]
        rounds.append({"seed": seed, "generated": result["test_cases"]["generated"], "errors": errors})
        if result["failures"] or errors:
            LOGS.mkdir(parents=True, exist_ok=True)
            (LOGS / f"{app}-{seed}.txt").write_text(run.stdout + run.stderr)
        seed += 1
    return {"operations": operations, "cases": generated, "failures": failures, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="test cases per app, at least")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--add", action="store_true", help="keep the results fuzz.json has of the other apps")
    args = parser.parse_args()
    # Stopped with SIGTERM, it still stops the stack it started (its processes are in sessions of their own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    key = secrets.token_urlsafe(24)
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "schemathesis": subprocess.run([str(SCHEMATHESIS), "--version"], capture_output=True, text=True).stdout.strip(),
        "checks": CHECKS.split(","),
        "results": {},
    }
    if args.add:
        earlier = json.loads((args.out / "fuzz.json").read_text())["results"]
        report["results"] = {app: result for app, result in earlier.items() if app not in args.apps}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        stack = Stack(work)
        try:
            stack.start_redis()
            full = start_full_stack(stack, ROOT / "models", {"fuzz": key}, GATEWAY_RATE_LIMIT="0")
            token = {"dapr-api-token": stack.dapr_api_token}
            for app in tqdm(args.apps, desc="fuzzing", unit="app"):
                headers = {**token, "Authorization": f"Bearer {key}"} if app == "gateway" else token
                result = fuzz_app(full, app, headers, args.cases, args.seed, work)
                result["every_app_still_up"] = all(process.popen.poll() is None for process in full.apps.values())
                report["results"][app] = result
                # Written after every app: a run cut short keeps what it measured.
                (args.out / "fuzz.json").write_text(json.dumps(report, indent=1))
                (args.out / "fuzz.md").write_text(markdown(report))
        finally:
            stack.close()
    print(markdown(report))
    if any(result["failures"] for result in report["results"].values()):
        sys.exit("fuzzing found failures: see fuzz.md")


def markdown(report: dict) -> str:
    lines = [
        f"# Fuzzing ({report['date']}, {report['machine']}, {report['schemathesis']})",
        "",
        "`python -m bench.fuzz`: every app's OpenAPI through its own sidecar, with the tokens; checks "
        + ", ".join(f"`{check}`" for check in report["checks"])
        + ".",
        "",
        "| app | operations | test cases | failures | errors of schemathesis itself | every app still up |",
        "|---|---|---|---|---|---|",
    ]
    for app, result in report["results"].items():
        failures = ", ".join(f"{name}: {count}" for name, count in result["failures"].items()) or "none"
        errors = sum(len(round_["errors"]) for round_ in result["rounds"])
        lines.append(
            f"| {app} | {result['operations']} | {result['cases']} | {failures} | {errors} | "
            f"{result['every_app_still_up']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
