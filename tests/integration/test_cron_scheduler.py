"""The local scheduler fires a function on its cron, like Cloud Scheduler would."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import local_stack


def test_scheduler_posts_to_the_function_on_its_cron(tmp_path):
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = local_stack.FunctionEntry(
        name="tick",
        entry_point="tick",
        # croniter's sixth field is seconds: every second.
        trigger={"kind": "schedule", "cron": "* * * * * *", "time_zone": "Asia/Taipei"},
        memory="256M",
        timeout_seconds=5,
        max_instances=1,
        secrets=(),
    )
    scheduler = local_stack.CronScheduler(
        [local_stack.FunctionProcessInfo(entry, server.server_address[1])], tmp_path / "s.log"
    )
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while len(hits) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop()
        server.shutdown()
    assert len(hits) >= 2
    assert "tick fired" in (tmp_path / "s.log").read_text()
