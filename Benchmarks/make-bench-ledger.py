#!/usr/bin/env python3
"""Fill a migrated refreshd ledger with the benchmark's 1M attempts, dated up to now.

The same shape as LedgerBenchmarks' file (1,000 accounts x 10 segments, 1,000,000 attempts over
90 days, 100,000 finished jobs), but ending at the current time, so the rules' windows of a
running refreshd find history in it.
Usage: make-bench-ledger.py LEDGER   (LEDGER made by starting refreshd once on an empty state dir)"""
import sqlite3
import sys
import time

path = sys.argv[1]
now = time.time()
zones = ["America/Chicago", "Europe/Paris", "Asia/Tokyo", "UTC"]
db = sqlite3.connect(path)
with db:
    def attempts():
        for i in range(1_000_000):
            segment = i % 10_000
            started = now - 60 - ((i * 7919) % (90 * 86400))
            rejected = i % 13 == 0
            yield ("acct-%d" % (segment % 1000), "00000000-0000-4000-8000-%012d" % segment, zones[segment % 4],
                   "rejected" if rejected else "accepted", 404 if rejected else 202, started, started + 0.4)
    db.executemany("INSERT INTO attempt (account, segment_id, time_zone, outcome, http_status, started_at,"
                   " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)", attempts())

    def jobs():
        for i in range(100_000):
            segment = i % 10_000
            t = now - 60 - ((i * 104_729) % (90 * 86400))
            yield ("acct-%d" % (segment % 1000), "00000000-0000-4000-8000-%012d" % segment, t, t)
    db.executemany("INSERT INTO job (source, content_digest, account, segment_id, time_zone, state, created_at,"
                   " updated_at) VALUES ('bench', 'x', ?, ?, 'UTC', 'sent', ?, ?)", jobs())
db.close()
