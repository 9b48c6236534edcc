import json
import queue
import subprocess
import sys
import threading

from eveadm.backends.host import wait_until


def test_events_follow_prints_new_events(cli):
    cli.create({"brand": "null", "alias": "first"})
    follower = subprocess.Popen([sys.executable, "-m", "eveadm", "--root", str(cli.root), "events", "-f", "-j"],
                                stdout=subprocess.PIPE, text=True, env=cli.env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(l)) for l in follower.stdout], daemon=True).start()
    seen = []

    def saw(pred):
        def check():
            while not lines.empty():
                seen.append(lines.get())
            return any(pred(e) for e in seen)
        return check

    try:
        assert wait_until(saw(lambda e: e.get("alias") == "first" and e.get("state") == "running"), 30)
        cli.create({"brand": "null", "alias": "second"})  # written after the follower printed the past
        assert wait_until(saw(lambda e: e.get("alias") == "second" and e.get("state") == "running"), 30)
    finally:
        follower.kill()
        follower.wait(10)
