#!/usr/bin/env python3
"""Out-of-process load on refreshd's control socket: N client processes, keep-alive HTTP/1.1,
GET /v1/segments/{id}/budget over 10,000 segments of the 1M-attempt bench ledger.
Usage: api-load.py CLIENTS REQUESTS [SOCKET]   (see Benchmarks/README.md for the set-up)"""
import socket, sys, time, multiprocessing as mp
SOCK=sys.argv[3] if len(sys.argv) > 3 else "/tmp/refreshd-api-bench/r.sock"
def worker(args):
    start, n = args
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(SOCK)
    lat=[]
    for k in range(n):
        seg = (start + k) % 10000
        req = ("GET /v1/segments/00000000-0000-4000-8000-%012d/budget?account=acct-%d&time_zone=UTC HTTP/1.1\r\nHost: x\r\n\r\n" % (seg, seg % 1000)).encode()
        t=time.perf_counter(); s.sendall(req)
        buf=b""
        while True:
            chunk=s.recv(65536); buf+=chunk
            if b"\r\n\r\n" in buf:
                head, _, body = buf.partition(b"\r\n\r\n")
                length=int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
                while len(body) < length: body += s.recv(65536)
                break
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        lat.append(time.perf_counter()-t)
    return lat
if __name__=="__main__":
    procs=int(sys.argv[1]); total=int(sys.argv[2])
    t=time.perf_counter()
    with mp.Pool(procs) as p: lats=sum(p.map(worker, [(i*(total//procs), total//procs) for i in range(procs)]), [])
    el=time.perf_counter()-t; lats.sort()
    print(f"{procs} clients, {len(lats)} requests in {el:.2f} s: {len(lats)/el:.0f} req/s, p50 {lats[len(lats)//2]*1000:.2f} ms, p99 {lats[int(len(lats)*0.99)]*1000:.2f} ms")
