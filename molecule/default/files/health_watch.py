"""Sample one node's /health until stopped: a line per sample, "START END STATUS", START
and END the Unix times around the request (one clock for every container of the host),
STATUS /health's status, or "down" when no answer came."""

import json
import sys
import time
import urllib.request

url, path = sys.argv[1], sys.argv[2]
with open(path, "a", buffering=1) as log:
    while True:
        start = time.time()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                status = json.load(response).get("status", "unknown")
        except (OSError, ValueError):
            status = "down"
        log.write(f"{start:.3f} {time.time():.3f} {status}\n")
        time.sleep(0.1)
