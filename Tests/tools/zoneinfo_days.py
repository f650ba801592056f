#!/usr/bin/env python3
"""Day windows by Python's zoneinfo, for cross-checking refreshd's own tz reader.

For every zone named on stdin (one per line) and every local date in [--from-year, --to-year],
computes the start of the local day by its definition: the first instant whose local wall time
is at or after that date's 00:00. It prints one line per zone:

    ZONE<TAB>DAY:DELTA DAY:DELTA ...

where DAY is the date as days since 1970-01-01 and DELTA = start - DAY * 86400, listed only
where DELTA differs from the previous date's (a run-length encoding; most zones change twice a
year). refreshd's test computes the same encoding and compares the lines.

Written independently of refreshd: it reads the same directory through the standard library
(zoneinfo, which parses TZif and the POSIX footer itself) and finds midnights by round trips
and bisection rather than by walking transitions.
"""
import argparse
import datetime as dt
import multiprocessing
import sys
import zoneinfo

EPOCH = dt.date(1970, 1, 1)
UTC = dt.timezone.utc


def wall(t, zone):
    return dt.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def day_start(date, zone):
    midnight = dt.datetime(date.year, date.month, date.day)
    u0 = int(midnight.replace(tzinfo=zone, fold=0).timestamp())
    u1 = int(midnight.replace(tzinfo=zone, fold=1).timestamp())
    exact = [u for u in (u0, u1) if wall(u, zone) == midnight]
    if exact:
        start = min(exact)
    else:
        # 00:00 falls in a gap: the first instant at or after it lies between the two readings.
        lo, hi = min(u0, u1), max(u0, u1)
        while wall(hi, zone) < midnight:  # defensive; a gap's fold=0 reading lands after it
            hi += 3600
        while lo < hi:
            mid = (lo + hi) // 2
            if wall(mid, zone) >= midnight:
                hi = mid
            else:
                lo = mid + 1
        start = lo
    if wall(start - 1, zone) >= midnight:
        # Wall time reached 00:00 earlier and went back: scan back minute by minute for the first.
        t = start - 1
        while wall(t - 60, zone) >= midnight or wall(t - 1, zone) >= midnight:
            t -= 1
        start = t
    return start


def encode(args):
    tzdir, name, first, last = args
    zoneinfo.reset_tzpath([tzdir])
    zone = zoneinfo.ZoneInfo(name)
    out = []
    previous = None
    date = first
    one = dt.timedelta(days=1)
    while date <= last:
        day = (date - EPOCH).days
        delta = day_start(date, zone) - day * 86400
        if delta != previous:
            out.append(f"{day}:{delta}")
            previous = delta
        date += one
    return name + "\t" + " ".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tzdir", required=True)
    parser.add_argument("--from-year", type=int, default=2000)
    parser.add_argument("--to-year", type=int, default=2040)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    names = [line.strip() for line in sys.stdin if line.strip()]
    first = dt.date(args.from_year, 1, 1)
    last = dt.date(args.to_year, 12, 31)
    work = [(args.tzdir, name, first, last) for name in names]
    # "spawn", not "fork": forking a process that has threads can leave a worker stuck on a lock.
    pool = multiprocessing.get_context("spawn").Pool(args.jobs)
    try:
        for line in pool.imap(encode, work, chunksize=4):
            print(line, flush=False)
    finally:
        pool.close()
        pool.join()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
