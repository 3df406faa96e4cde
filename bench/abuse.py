#!/usr/bin/env python3
"""bench/abuse.py -- the hostile clients of bench/abuse.sh, on loopback only.

slow  HOST PORT PID TRICKLE SILENT SECS
    Opens TRICKLE connections that send a request head one byte every 2 s and SILENT
    connections that send nothing, while one well-behaved client sends GET /v2/ every
    50 ms. After SECS seconds prints JSON: how many slow connections the server still
    holds, the well-behaved client's p50/p99 latency and errors, and the server's RssAnon.

burst HOST PORT PID N
    Pushes a config blob, then N concurrent PUTs of distinct ~4 MiB OCI manifests, each
    retried after Retry-After on 429. Prints JSON: answers, 429s, seconds, and the server's
    RssAnon at the start, at the peak (sampled every 10 ms), and 5 s after.
"""

import asyncio
import hashlib
import json
import sys
import threading
import time


def rss_anon_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def request(host, port, method, path, headers=None, body=b"", timeout=60):
    """One HTTP/1.1 request on its own connection; returns (status, headers, body)."""
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        w.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


async def slow(host, port, pid, trickle, silent, secs):
    held = []

    async def trickler():
        try:
            r, w = await asyncio.open_connection(host, port)
        except OSError:
            return
        held.append(r)
        head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
        for b in head:
            try:
                w.write(bytes([b]))
                await w.drain()
            except OSError:
                return
            await asyncio.sleep(2)

    async def silent_one():
        try:
            r, _w = await asyncio.open_connection(host, port)
            held.append(r)
        except OSError:
            pass

    tasks = [asyncio.create_task(trickler()) for _ in range(trickle)]
    await asyncio.gather(*[silent_one() for _ in range(silent)])
    lat, errors = [], 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            status, _, _ = await request(host, port, "GET", "/v2/", timeout=10)
            if status != 200:
                errors += 1
        except (OSError, asyncio.TimeoutError):
            errors += 1
        lat.append((time.monotonic() - t) * 1000)
        await asyncio.sleep(0.05)
    still = 0
    for r in held:
        # A connection the server closed reads EOF at once; an open one has nothing to read.
        try:
            data = await asyncio.wait_for(r.read(65536), 0.01)
            while data:
                data = await asyncio.wait_for(r.read(65536), 0.01)
        except asyncio.TimeoutError:
            still += 1
        except OSError:
            pass
    for t in tasks:
        t.cancel()
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
    print(json.dumps({"opened": len(held), "held_after": still, "requests": len(lat),
                      "errors": errors, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "rss_anon_mib": round(rss_anon_mib(pid), 1)}))


def manifest(config_digest, config_size, seed, size=(4 << 20) - 512):
    base = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [], "annotations": {"org.example.pad": ""}}
    pad_len = size - len(json.dumps(base, separators=(",", ":")))
    base["annotations"]["org.example.pad"] = f"{seed:08}-" + "x" * (pad_len - 9)
    return json.dumps(base, separators=(",", ":")).encode()


async def burst(host, port, pid, n):
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    status, hdrs, _ = await request(host, port, "POST", "/v2/abuse/burst/blobs/uploads/")
    assert status == 202, status
    loc = hdrs["location"]
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    status, _, body = await request(host, port, "PUT", f"{loc}{sep}digest={digest}",
                                    {"Content-Type": "application/octet-stream"}, config)
    assert status == 201, (status, body)
    bodies = [manifest(digest, len(config), i) for i in range(n)]
    baseline = rss_anon_mib(pid)
    peak = [baseline]
    sampling = [True]

    def sampler():
        while sampling[0]:
            peak[0] = max(peak[0], rss_anon_mib(pid))
            time.sleep(0.01)

    th = threading.Thread(target=sampler)
    th.start()
    answers, refused = {}, [0]

    async def put(i):
        while True:
            try:
                status, hdrs, body = await request(
                    host, port, "PUT", f"/v2/abuse/burst/manifests/m{i}",
                    {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, bodies[i],
                    timeout=120)
            except (OSError, asyncio.TimeoutError) as e:
                answers[type(e).__name__] = answers.get(type(e).__name__, 0) + 1
                return
            if status == 429:
                refused[0] += 1
                await asyncio.sleep(float(hdrs.get("retry-after", "1")) / 4)
                continue
            answers[str(status)] = answers.get(str(status), 0) + 1
            return

    started = time.monotonic()
    await asyncio.gather(*[put(i) for i in range(n)])
    took = time.monotonic() - started
    sampling[0] = False
    th.join()
    await asyncio.sleep(5)
    print(json.dumps({"answers": answers, "refused_429": refused[0], "secs": round(took, 2),
                      "rss_baseline_mib": round(baseline, 1), "rss_peak_mib": round(peak[0], 1),
                      "rss_after_5s_mib": round(rss_anon_mib(pid), 1)}))


def main():
    mode, host, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "slow":
        asyncio.run(slow(host, port, pid, int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])))
    elif mode == "burst":
        asyncio.run(burst(host, port, pid, int(sys.argv[5])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
