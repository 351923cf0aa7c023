"""Start-up time of the commands that need no model, against ``python -c "import torch"``.

Every command runs as a subprocess, through ``python -m segnext_hub`` and through the
installed console script, interleaved with the baseline in the same run (on a shared
machine load drifts; alternating keeps the ratio fair). The cache holds one artifact,
pulled first over a loopback mirror (127.0.0.1; generated weights, see tests/helpers).
Targets: every command <= 0.3x the torch import, a cached ``pull`` under 0.5 s.

    python benchmarks/bench_cli.py [--repeats 5] [--only list,pull]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NAME = "mscan-t"
RATIO_TARGET = 0.3
CACHED_PULL_TARGET_S = 0.5
TORCH = "python -c 'import torch'"
BARE = "python -c 'pass'"
SUBCOMMANDS = ("list", "pull", "info", "path", "verify", "rm", "log", "predict", "eval", "export", "push")


def commands(log_file: Path) -> dict[str, list[str]]:
    """Label -> arguments after the program name."""
    table = {"--help": ["--help"]}
    table.update({f"{sub} --help": [sub, "--help"] for sub in SUBCOMMANDS})
    table.update({
        "list": ["list"], "list --json": ["list", "--json"], f"info {NAME}": ["info", NAME],
        f"path {NAME}": ["path", NAME], "verify": ["verify"], f"rm {NAME}": ["rm", NAME],
        f"log {NAME}": ["log", NAME], "log FILE": ["log", str(log_file)], f"pull {NAME} (cached)": ["pull", "-q", NAME],
    })
    return table


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return seconds


def populate_cache(cache: Path) -> Path:
    """A real pull of NAME from a loopback mirror into ``cache``; returns a spare copy of its folder."""
    from segnext_hub.hub.pull import pull
    from tests.helpers.http_server import LoopbackServer
    from tests.helpers.mirror import Mirror

    with LoopbackServer() as server:
        os.environ["SEGNEXT_HUB_MIRROR"] = server.base_url
        Mirror(server).serve(NAME)
        result = pull(NAME, progress=False)
        del os.environ["SEGNEXT_HUB_MIRROR"]
    spare = cache.parent / "spare"
    shutil.copytree(result.path, spare)
    return spare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="Comma-separated labels' first words to run (e.g. list,pull).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        os.environ["SEGNEXT_HUB_CACHE"] = str(cache)
        spare = populate_cache(cache)
        # No network can be touched: a cached pull must not need it, and nothing else should.
        env = dict(os.environ, SEGNEXT_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
        env.pop("SEGNEXT_HUB_MIRROR", None)
        log_file = next(p for p in spare.iterdir() if p.name.endswith(".log.json"))
        table = commands(log_file)
        if args.only:
            wanted = tuple(args.only.split(","))
            table = {k: v for k, v in table.items() if k.split()[0] in wanted}
        bin_dir = Path(sys.executable).parent
        entries = {"python -m segnext_hub": [sys.executable, "-m", "segnext_hub"],
                   "segnext-hub": [str(bin_dir / "segnext-hub")]}
        baselines = {TORCH: [sys.executable, "-c", "import torch"], BARE: [sys.executable, "-c", "pass"]}
        convert_help = {"segnext-convert --help": [str(bin_dir / "segnext-convert"), "--help"],
                        "python -m segnext_hub.cli.convert --help": [sys.executable, "-m", "segnext_hub.cli.convert",
                                                                   "--help"]}
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):
            for label, argv in baselines.items():
                times.setdefault(("baseline", label), []).append(timed(argv, env))
            for label, argv in convert_help.items():
                times.setdefault(("convert", label), []).append(timed(argv, env))
            for label, rest in table.items():
                for entry, prefix in entries.items():
                    if not (cache / NAME).exists():
                        shutil.copytree(spare, cache / NAME)  # rm removes a real cached folder each time
                    times.setdefault((entry, label), []).append(timed(prefix + rest, env))
            if not (cache / NAME).exists():
                shutil.copytree(spare, cache / NAME)

    median = {key: statistics.median(values) for key, values in times.items()}
    torch_s = median[("baseline", TORCH)]
    print(f"CLI start-up, median of {args.repeats} runs each, interleaved; "
          f"{TORCH} = {torch_s:.3f} s, {BARE} = {median[('baseline', BARE)]:.3f} s")
    print(f"Target: <= {RATIO_TARGET}x the torch import; a cached pull < {CACHED_PULL_TARGET_S} s.")
    print()
    print("| command | python -m segnext_hub | ratio | segnext-hub | ratio | target |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    failures = []
    for label in table:
        m, s = median[("python -m segnext_hub", label)], median[("segnext-hub", label)]
        worst = max(worst, m / torch_s, s / torch_s)
        ok = max(m, s) / torch_s <= RATIO_TARGET
        if label.startswith("pull"):
            ok = ok and max(m, s) < CACHED_PULL_TARGET_S
        if not ok:
            failures.append(label)
        verdict = "met" if ok else "MISSED"
        print(f"| {label} | {m:.3f} s | {m / torch_s:.2f}x | {s:.3f} s | {s / torch_s:.2f}x | {verdict} |")
    for label in convert_help:
        c = median[("convert", label)]
        worst = max(worst, c / torch_s)
        ok = c / torch_s <= RATIO_TARGET
        if not ok:
            failures.append(label)
        print(f"| {label} | {c:.3f} s | {c / torch_s:.2f}x | | | {'met' if ok else 'MISSED'} |")
    print()
    verdict = f"targets MISSED: {', '.join(failures)}" if failures else "every target met"
    print(f"worst ratio {worst:.2f}x; {verdict}")


if __name__ == "__main__":
    main()
