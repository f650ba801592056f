#!/usr/bin/env python3
"""Two refreshd builds side by side, as processes, in one run: spool intake (N job files dropped
while the daemon is stopped, then the time from start until the spool is empty, less the start-up
time with an empty spool) and the control API (api-load.py's segment budget, keep-alive clients
over the unix socket, 1,000 configured accounts, fresh ledger). Dry-run, no network.
Usage: process-compare.py BINARY [BINARY...] [--files N] [--clients C] [--requests R] [--rounds K]"""
import argparse, os, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))


def config(directory, accounts):
    lines = [f'state_dir = "{directory}/state"', f'spool_dir = "{directory}/spool"', f'socket = "{directory}/r.sock"', "dry_run = true"]
    for n in range(accounts):
        lines += ["[[account]]", f'name = "acct-{n}"']
    path = os.path.join(directory, "refreshd.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start(binary, path, directory):
    env = {"HOME": directory, "PATH": "/usr/bin:/bin", "REFRESHD_LOG_LEVEL": "warning"}
    return subprocess.Popen([binary, "run", "--config", path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_socket(sock, timeout=60):
    import socket as s
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = s.socket(s.AF_UNIX, s.SOCK_STREAM)
            c.connect(sock)
            c.close()
            return True
        except OSError:
            time.sleep(0.002)
    return False


def spool_empty(directory):
    names = []
    for sub in ("incoming", "active"):
        try:
            names += [n for n in os.listdir(os.path.join(directory, "spool", sub)) if not n.startswith(".")]
        except FileNotFoundError:
            pass
    return not names


def intake_seconds(binary, files):
    """Seconds from exec until `files` job files are gone from the spool, less an empty start."""
    def run(count):
        directory = tempfile.mkdtemp(prefix="refreshd-cmp-")
        path = config(directory, 1)
        # First start creates the directories; then stop and drop the files.
        p = start(binary, path, directory)
        wait_socket(directory + "/r.sock")
        p.terminate(); p.wait()
        incoming = os.path.join(directory, "spool", "incoming")
        for i in range(count):
            body = '{"segment_id": "0f8c5e8e-1111-4f4a-9a53-%012d", "user_time_zone": "America/Chicago", "account": "acct-0"}' % i
            with open(os.path.join(incoming, f".j{i}"), "w") as f:
                f.write(body)
            os.rename(os.path.join(incoming, f".j{i}"), os.path.join(incoming, f"j{i}.json"))
        t = time.perf_counter()
        p = start(binary, path, directory)
        while not spool_empty(directory):
            time.sleep(0.002)
        took = time.perf_counter() - t
        if count == 0:
            wait_socket(directory + "/r.sock")
            took = time.perf_counter() - t
        p.terminate(); p.wait()
        shutil.rmtree(directory, ignore_errors=True)
        return took
    return run(files) - run(0)


def api(binary, clients, requests):
    directory = tempfile.mkdtemp(prefix="refreshd-cmp-")
    path = config(directory, 1000)
    p = start(binary, path, directory)
    wait_socket(directory + "/r.sock")
    out = subprocess.run([sys.executable, os.path.join(HERE, "api-load.py"), str(clients), str(requests), directory + "/r.sock"],
                         capture_output=True, text=True).stdout.strip()
    p.terminate(); p.wait()
    shutil.rmtree(directory, ignore_errors=True)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    for round in range(a.rounds):
        # Alternate the builds within each round so both see the same machine.
        for binary in a.binaries:
            seconds = intake_seconds(binary, a.files)
            print(f"round {round + 1} {binary}: intake {a.files} files in {seconds:.2f} s ({a.files / seconds:.0f} files/s)", flush=True)
            print(f"round {round + 1} {binary}: api {api(binary, a.clients, a.requests)}", flush=True)


if __name__ == "__main__":
    main()
