#!/usr/bin/env python3
"""Binary sizes and start-up times of two builds of refreshd/refreshctl, measured in one run.

Usage: Benchmarks/startup-compare.py LABEL=DIR LABEL=DIR [--runs N]
  DIR holds refreshd and refreshctl (e.g. a dynamic release build and the static one `make build`
  makes). Sizes are reported as built and stripped (as the package ships them). Start-up:
  - `refreshctl --version` and `refreshd version`: exec to exit;
  - `refreshd run` on a fresh state directory: exec to the "refreshd started" line (the READY
    point: ledger open and migrated, spool scanned), then SIGTERM.
Runs alternate between the builds so both see the same machine state; p50 and p90 are printed.
"""
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def stripped_size(path):
    with tempfile.NamedTemporaryFile(delete=False) as copy:
        target = copy.name
    shutil.copyfile(path, target)
    subprocess.run(["strip", "--remove-section=.comment", "--remove-section=.note", target], check=True)
    size = os.path.getsize(target)
    os.unlink(target)
    return size


def time_exec(argv):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def time_ready(refreshd):
    work = tempfile.mkdtemp(prefix="refreshd-startup-")
    config = os.path.join(work, "refreshd.toml")
    with open(config, "w") as f:
        f.write(f'state_dir = "{work}/state"\nspool_dir = "{work}/spool"\nsocket = "{work}/refreshd.sock"\n')
    env = {"HOME": work, "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    process = subprocess.Popen([refreshd, "run", "--config", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    elapsed = None
    for line in process.stdout:
        if "refreshd started" in line:
            elapsed = time.perf_counter() - start
            break
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    shutil.rmtree(work)
    if elapsed is None:
        raise SystemExit(f"{refreshd} never said 'refreshd started'")
    return elapsed


def main():
    args = sys.argv[1:]
    runs = 30
    if "--runs" in args:
        index = args.index("--runs")
        runs = int(args[index + 1])
        del args[index:index + 2]
    builds = [arg.split("=", 1) for arg in args]
    print("| build | refreshd size (stripped) | refreshctl size (stripped) | refreshctl --version | refreshd version | refreshd run to READY |")
    print("|---|---|---|---|---|---|")
    samples = {label: {"ctl": [], "version": [], "ready": []} for label, _ in builds}
    for _ in range(runs):
        for label, directory in builds:
            samples[label]["ctl"].append(time_exec([os.path.join(directory, "refreshctl"), "--version"]))
            samples[label]["version"].append(time_exec([os.path.join(directory, "refreshd"), "version"]))
            samples[label]["ready"].append(time_ready(os.path.join(directory, "refreshd")))

    def fmt(values):
        values = sorted(values)
        p90 = values[int(len(values) * 0.9) - 1]
        return f"{statistics.median(values) * 1000:.1f} ms ({p90 * 1000:.1f})"

    for label, directory in builds:
        sizes = []
        for tool in ("refreshd", "refreshctl"):
            path = os.path.join(directory, tool)
            sizes.append(f"{os.path.getsize(path) / 1e6:.1f} MB ({stripped_size(path) / 1e6:.1f} MB)")
        s = samples[label]
        print(f"| {label} | {sizes[0]} | {sizes[1]} | {fmt(s['ctl'])} | {fmt(s['version'])} | {fmt(s['ready'])} |")


if __name__ == "__main__":
    main()
