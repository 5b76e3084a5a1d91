"""The running agent: poller, sender and status-report threads around one outbox, until SIGTERM.

On start it registers every meter (the sender does PUT /point before any
reading). It watches the config file: when it changes and is valid, polling and
delivery restart with the new meters (and re-register them); an invalid change
is logged and the running config kept. SIGHUP forces that reload.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from . import log
from .clock import Clock, ClockCheck
from .cloud import Cloud
from .config import Config, ConfigError, load_config
from .outbox import Outbox
from .report import StatusReporter
from .scheduler import Poller, Scheduler
from .sender import Sender

logger = log.get("agent")


class Agent:
    """Wires config, outbox, poller, scheduler and sender; ``run`` blocks until stopped."""

    def __init__(self, cfg: Config, clock: Clock | None = None):
        self.cfg = cfg
        self.clock = clock or Clock()
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()

    def _start(self, cfg: Config):
        key = cfg.require_key()
        log.register_secret(key)
        outbox = Outbox(cfg.buffer, cfg.max_pending, clock=self.clock)
        # the time readings are stamped with: every cloud answer's Date and PUT /status's offset are evidence
        check = ClockCheck(bound=2 * 60 * min(m.SaveEvery for m in cfg.meters))
        mono = self.clock.monotonic
        cloud = Cloud(cfg.url, key, cfg.http_timeout, clock_check=check, monotonic=mono)
        # its own HTTP session: a slow POST /data never holds a status report back
        reporter = StatusReporter(outbox, Cloud(cfg.url, key, min(cfg.http_timeout, 30.0), clock_check=check,
                                                monotonic=mono), self.clock, monotonic=mono, clock_check=check)
        sender = Sender(outbox, cloud, cfg.meters, batch_size=cfg.batch_size, backoff_initial=cfg.backoff_initial,
                        backoff_max=cfg.backoff_max, retention_days=cfg.retention_days, clock=self.clock,
                        on_delivery=reporter.poke)
        poller = Poller(cfg, outbox, on_stored=sender.wake.set, clock=self.clock)
        stop = threading.Event()
        threads = [
            threading.Thread(target=Scheduler(poller, self.clock, stop, check).run, name="scheduler", daemon=True),
            threading.Thread(target=sender.run, args=(stop,), name="sender", daemon=True),
            threading.Thread(target=reporter.run, args=(stop,), name="status", daemon=True),
        ]
        for t in threads:
            t.start()
        log.event(logger, logging.INFO, "started", config=cfg.path, meters=len(cfg.meters), buses=",".join(cfg.buses),
                  url=cfg.url, buffer=cfg.buffer, pid=os.getpid())
        return stop, threads, poller, outbox

    def run(self) -> int:
        mtime = _mtime(self.cfg.path)  # before the threads start: an edit made while they start is seen
        stop, threads, poller, outbox = self._start(self.cfg)
        try:
            while not self.stop_event.is_set():
                self.stop_event.wait(2.0)
                new_mtime = _mtime(self.cfg.path)
                if not self.reload_event.is_set() and new_mtime == mtime:
                    continue
                self.reload_event.clear()
                mtime = new_mtime
                try:
                    new = load_config(self.cfg.path)
                    new.require_key()
                except ConfigError as exc:
                    log.event(logger, logging.ERROR, "config_reload_rejected", error=str(exc), note="keeping the running config")
                    continue
                log.event(logger, logging.INFO, "config_reloaded", meters=len(new.meters))
                self._halt(stop, threads, poller, outbox)
                self.cfg = new
                stop, threads, poller, outbox = self._start(new)
        finally:
            self._halt(stop, threads, poller, outbox)
            log.event(logger, logging.INFO, "stopped")
        return 0

    def _halt(self, stop, threads, poller, outbox) -> None:
        stop.set()
        for t in threads:
            t.join(60)
        poller.close()
        outbox.close()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
