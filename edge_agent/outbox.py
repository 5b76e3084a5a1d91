"""The durable outbox: every reading is written here before anything is sent.

SQLite in WAL mode with ``synchronous=FULL``: a committed reading survives a power
cut. Readings are keyed by (meter, time) and inserted with INSERT OR IGNORE, so a
reading taken twice is stored once. A reading is ``pending`` until the cloud's
receipt covers it, then ``delivered`` (kept ``retention_days`` for audit, then
pruned), or ``dead`` when the cloud rejected it (the reason is in ``dead_letters``).

The bound: at most ``max_pending`` pending readings (default 7,000,000: more than a
year of 5-minute readings for 64 meters, roughly 0.6 GB of disk). At the bound new
readings are NOT inserted: each one is counted in ``dropped`` (per meter, first and
last time) and logged at ERROR by the poller; ``status`` shows the count. We keep
the oldest rather than evicting them because every value is a cumulative register:
the first reading stored after the outage ends carries all the energy of the gap,
so dropping the newest loses only the time resolution at the tail, never energy,
and never rewrites history the cloud has not seen yet.

A poll is stored in one transaction, each meter's part of it in a savepoint: a
reading the database refuses (whatever the reason) fails that meter alone, never
the poll. A reading the plausibility check holds back is kept in ``suspect`` with
its reason (not sent); ``status`` lists them. ``meta`` keeps the last boundary
stamped (the clock check's evidence across restarts) and the clock's state. A reading
taken while the box's time was known to be wrong is kept in ``held`` with the
monotonic time it was taken at (and the boot, as that clock restarts with the box),
until the true time is known and it is stamped, or dropped and counted.

Each thread gets its own connection (sqlite3 connections are not shared).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .clock import Clock, iso
from .config import default

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    meter TEXT NOT NULL,
    ts TEXT NOT NULL,              -- ISO 8601 UTC, 2019-10-30T13:15:00Z
    value REAL NOT NULL,           -- kWh, unwrapped
    status INTEGER NOT NULL DEFAULT 0,  -- 0 pending, 1 delivered, 2 dead
    taken_at REAL NOT NULL,
    delivered_at REAL,
    reset INTEGER NOT NULL DEFAULT 0,  -- 1: the first reading of a new register series (sent as "reset": true)
    PRIMARY KEY (meter, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_pending ON readings (status, ts, meter);
-- the drain order of pending(): UTC day, then meter, then time (the expression must match the query's)
CREATE INDEX IF NOT EXISTS readings_drain ON readings (status, substr(ts, 1, 10), meter, ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    meter TEXT NOT NULL, ts TEXT NOT NULL, value REAL NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL, code TEXT,  -- code: the cloud's machine-readable rejection code
    PRIMARY KEY (meter, ts)
);
CREATE TABLE IF NOT EXISTS counters (      -- rollover state per meter register
    meter TEXT PRIMARY KEY, last_raw INTEGER NOT NULL, wraps INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meter_health (
    meter TEXT PRIMARY KEY, bus TEXT, failures INTEGER NOT NULL,
    since REAL, last_error TEXT, last_ok REAL
);
CREATE TABLE IF NOT EXISTS dropped (
    meter TEXT PRIMARY KEY, count INTEGER NOT NULL, first_ts TEXT, last_ts TEXT
);
CREATE TABLE IF NOT EXISTS registrations (
    meter TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS held (          -- readings taken while the time was wrong or unconfirmed: not stamped yet
    meter TEXT NOT NULL, boot TEXT NOT NULL, mono REAL NOT NULL,  -- taken at this monotonic time of that boot
    wall REAL NOT NULL,            -- and at this time of the box's clock
    held_as TEXT NOT NULL,         -- the clock's state then (unconfirmed, behind_readings, ...)
    value REAL NOT NULL, bus TEXT,
    PRIMARY KEY (meter, boot, mono)
);
CREATE TABLE IF NOT EXISTS suspect (       -- readings held back by the plausibility check
    meter TEXT NOT NULL, ts TEXT NOT NULL, value REAL, reason TEXT NOT NULL, at REAL NOT NULL,
    last_raw REAL, wraps INTEGER,  -- the rollover state had the reading been kept (applied on release)
    PRIMARY KEY (meter, ts)
);
"""

PENDING, DELIVERED, DEAD = 0, 1, 2
# Columns added since the first outboxes (table, column, declaration): added to an older outbox at open.
MIGRATIONS = (
    ("dead_letters", "code", "TEXT"),
    ("readings", "reset", "INTEGER NOT NULL DEFAULT 0"),
    ("suspect", "last_raw", "REAL"),
    ("suspect", "wraps", "INTEGER"),
)


@dataclass(frozen=True)
class Reading:
    """One reading of a meter's cumulative register. ``reset``: it starts a new register series (a meter
    replaced, or released as one after being held back): the cloud counts nothing from the meter's
    previous reading to this one. Sent in POST /data as ``"reset": true``, and only then."""

    meter: str
    ts: str  # ISO 8601 UTC with Z
    value: float
    reset: bool = False


class Outbox:
    """SQLite-backed outbox; safe to use from several threads and processes."""

    def __init__(self, path: str, max_pending: int = default("agent", "max_pending"), clock: Clock | None = None):
        self.path = path
        self.max_pending = max_pending
        self.clock = clock or Clock()
        self._local = threading.local()
        self._hint_lock = threading.Lock()
        self._hint: int | None = None  # pending count when last counted
        self._inserted_since = 0  # readings stored since then (deliveries only lower it)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db().executescript(SCHEMA)
        self._migrate()

    # -- plumbing -------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=60000")
            self._local.db = db
        return db

    def _migrate(self) -> None:
        """Bring an outbox written by an older agent up to this schema (columns added since)."""
        db = self._db()
        for table, column, decl in MIGRATIONS:
            cols = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in cols:
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                except sqlite3.OperationalError:  # another process added it first
                    pass

    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, et, ev, tb):
            self.db.execute("COMMIT" if et is None else "ROLLBACK")
            return False

    def _tx(self):
        return self._Tx(self._db())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- taking readings --------------------------------------------------------
    def add(self, reading: Reading, counter: tuple | None = None) -> str:
        """Store one reading (and, atomically, its rollover counter state).

        Returns 'stored', 'exists' (already taken: ignored) or 'dropped' (bound)."""
        return self.record_poll([Take(reading.meter, "", reading, counter)])[0]

    def record_poll(self, takes: list["Take"], errors: list | None = None, boundary: str | None = None,
                    unheld: Sequence[tuple[str, str, float]] = ()) -> list[str]:
        """Store the outcome of a poll in ONE transaction (one fsync per poll, not per
        meter): readings, their counter states, and each meter's health.

        Outcomes: stored | exists | dropped | suspect | failed. Each take is stored in
        a savepoint: one the database refuses becomes 'failed' (its reason appended to
        ``errors`` when given) and the others are stored all the same. ``unheld``: held
        readings (meter, boot, mono) these takes stamp, removed in the same transaction."""
        now = self.clock.now()
        out = []
        with self._tx() as db:
            db.executemany("DELETE FROM held WHERE meter=? AND boot=? AND mono=?", list(unheld))
            for t in takes:
                err = t.error
                db.execute("SAVEPOINT take")
                try:
                    outcome = self._take(db, t, now)
                    db.execute("RELEASE take")
                except sqlite3.Error as exc:
                    if isinstance(exc, sqlite3.OperationalError) and "disk" in str(exc).lower():
                        raise  # disk full / I/O error: the whole poll fails, the caller logs it
                    db.execute("ROLLBACK TO take")
                    db.execute("RELEASE take")
                    err = f"could not store the reading: {type(exc).__name__}: {exc}"
                    _health(db, t.meter, t.bus, now, err)
                    outcome = "failed"
                out.append(outcome)
                if errors is not None:
                    errors.append(err if outcome == "failed" else None)
            if boundary:
                db.execute("INSERT INTO meta(k, v) VALUES ('last_boundary', ?) "
                           "ON CONFLICT(k) DO UPDATE SET v=max(v, excluded.v)", (boundary,))
        return out

    def _take(self, db, t: "Take", now: float) -> str:
        if t.reading is None:
            _health(db, t.meter, t.bus, now, t.error or "error")
            return "failed"
        if not math.isfinite(float(t.reading.value)):
            raise sqlite3.IntegrityError(f"value {t.reading.value} is not finite")
        if t.suspect:
            last_raw, wraps = t.counter if t.counter is not None else (None, None)
            db.execute("INSERT OR IGNORE INTO suspect(meter, ts, value, reason, at, last_raw, wraps) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (t.reading.meter, t.reading.ts, float(t.reading.value), t.suspect[:500], now, last_raw, wraps))
            if t.bus:
                _health(db, t.meter, t.bus, now, f"suspect reading held back: {t.suspect}")
            return "suspect"
        outcome = self._add(db, t.reading, t.counter, now)
        if t.bus:
            _health(db, t.meter, t.bus, now, None)
        return outcome

    def release_suspect(self, meter: str, new_series: bool = True) -> int:
        """Send a meter's held-back readings after all; returns how many are now pending.

        For an operator who judged them right. ``new_series`` (a meter replaced or reset): the first one
        released is marked ``reset``, so the cloud starts a new register series there and counts nothing
        across the step; otherwise (a ``max_power_kw`` set too low) the step is consumption. They become
        ordinary pending readings, the meter's next readings are judged against them, and the rollover
        state follows the last one. A reading the outbox bound drops stays held back."""
        now = self.clock.now()
        released = 0
        with self._tx() as db:
            rows = db.execute("SELECT ts, value, last_raw, wraps FROM suspect WHERE meter=? ORDER BY ts",
                              (meter,)).fetchall()
            kept = db.execute("SELECT max(ts) FROM readings WHERE meter=?", (meter,)).fetchone()[0] or ""
            for ts, value, last_raw, wraps in rows:
                # the rollover state moves with a released reading only past every reading kept since
                counter = (last_raw, wraps) if last_raw is not None and ts > kept else None
                if self._add(db, Reading(meter, ts, value, reset=new_series and not released), counter, now) != "dropped":
                    db.execute("DELETE FROM suspect WHERE meter=? AND ts=?", (meter, ts))
                    released += 1
        return released

    def hold(self, held: list["Held"], failed: Sequence["Take"] = ()) -> int:
        """Keep readings taken while the time is known wrong (and the failures of that read), in one
        transaction; the rollover state follows the meter. At the outbox bound a reading is not kept:
        counted (``held_dropped``). Returns how many were kept."""
        now = self.clock.now()
        kept = 0
        with self._tx() as db:
            for t in failed:
                _health(db, t.meter, t.bus, now, t.error or "error")
            count = db.execute("SELECT count(*) FROM held").fetchone()[0]
            for h in held:
                if h.counter is not None:
                    db.execute("INSERT INTO counters(meter, last_raw, wraps) VALUES (?,?,?) ON CONFLICT(meter) "
                               "DO UPDATE SET last_raw=excluded.last_raw, wraps=excluded.wraps", (h.meter, *h.counter))
                if count + kept >= self.max_pending:
                    _count_meta(db, "held_dropped", 1)
                    continue
                db.execute("INSERT OR IGNORE INTO held(meter, boot, mono, wall, held_as, value, bus) "
                           "VALUES (?,?,?,?,?,?,?)", (h.meter, h.boot, h.mono, h.wall, h.held_as, float(h.value), h.bus))
                _health(db, h.meter, h.bus, now, None)
                kept += 1
        return kept

    def held_count(self) -> int:
        return self._db().execute("SELECT count(*) FROM held").fetchone()[0]

    def held(self) -> list["Held"]:
        """The readings held (not stamped yet), by meter and in the order they were taken."""
        rows = self._db().execute("SELECT meter, boot, mono, wall, held_as, value, bus FROM held "
                                  "ORDER BY meter, boot, mono").fetchall()
        return [Held(m, boot, mono, wall, held_as, value, bus or "") for m, boot, mono, wall, held_as, value, bus in rows]

    def drop_held(self, held: list["Held"], why: str) -> None:
        """Forget held readings that cannot be stamped right (counted in ``held_dropped``; ``why`` is logged
        by the caller)."""
        with self._tx() as db:
            db.executemany("DELETE FROM held WHERE meter=? AND boot=? AND mono=?", [(h.meter, h.boot, h.mono) for h in held])
            _count_meta(db, "held_dropped", len(held))

    def last_reading(self, meter: str, before_ts: str) -> tuple[str, float] | None:
        """The meter's latest reading kept before ``before_ts`` (plausibility's reference)."""
        row = self._db().execute(
            "SELECT ts, value FROM readings WHERE meter=? AND ts<? ORDER BY ts DESC LIMIT 1", (meter, before_ts)
        ).fetchone()
        return (row[0], row[1]) if row else None

    def last_boundary(self) -> str | None:
        """The latest boundary a poll stamped (kept across restarts)."""
        return self.meta("last_boundary")

    def set_clock_state(self, state: dict) -> None:
        """What the scheduler last concluded about the system clock (shown by ``status``)."""
        self.set_meta("clock", json.dumps(state))

    def _add(self, db, reading: Reading, counter, now) -> str:
        exists = db.execute(
            "SELECT 1 FROM readings WHERE meter=? AND ts=?", (reading.meter, reading.ts)
        ).fetchone()
        if exists:
            return "exists"
        if counter is not None:  # the counter follows the meter even when the reading is dropped
            db.execute(
                "INSERT INTO counters(meter, last_raw, wraps) VALUES (?,?,?) "
                "ON CONFLICT(meter) DO UPDATE SET last_raw=excluded.last_raw, wraps=excluded.wraps",
                (reading.meter, counter[0], counter[1]),
            )
        if self._pending_upper_bound(db) >= self.max_pending:
            db.execute(
                "INSERT INTO dropped(meter, count, first_ts, last_ts) VALUES (?,1,?,?) "
                "ON CONFLICT(meter) DO UPDATE SET count=count+1, last_ts=excluded.last_ts",
                (reading.meter, reading.ts, reading.ts),
            )
            return "dropped"
        db.execute(
            "INSERT OR IGNORE INTO readings(meter, ts, value, status, taken_at, reset) VALUES (?,?,?,0,?,?)",
            (reading.meter, reading.ts, float(reading.value), now, int(reading.reset)),
        )
        with self._hint_lock:
            self._inserted_since += 1
        return "stored"

    def _pending_upper_bound(self, db) -> int:
        """Pending count, counted exactly only every 1000 inserts or near the bound
        (counting 7 M rows on every insert would cost a poll cycle)."""
        with self._hint_lock:
            est = None if self._hint is None else self._hint + self._inserted_since
            if est is None or est >= self.max_pending or self._inserted_since >= 1000:
                self._hint = db.execute("SELECT count(*) FROM readings WHERE status=0").fetchone()[0]
                self._inserted_since = 0
                est = self._hint
            return est

    def counter(self, meter: str) -> tuple[int, int] | None:
        row = self._db().execute("SELECT last_raw, wraps FROM counters WHERE meter=?", (meter,)).fetchone()
        return (row[0], row[1]) if row else None

    # -- delivering -------------------------------------------------------------
    def pending(self, limit: int) -> list[Reading]:
        """The next pending readings to send: the oldest UTC day first, within it meter by meter, each in time.

        The cloud keeps one item per meter and UTC day, rewritten by every request that adds to it: a
        backlog sent in time order rewrites every meter's item in every batch, sent day by day and meter
        by meter each item is written about once (64x fewer write units, docs/scale.md). Days still go
        oldest first, and a live poll (one reading per meter) is one batch either way.
        """
        rows = self._db().execute(
            "SELECT meter, ts, value, reset FROM readings WHERE status=0 ORDER BY substr(ts, 1, 10), meter, ts LIMIT ?",
            (limit,),
        ).fetchall()
        return [Reading(m, ts, v, bool(reset)) for m, ts, v, reset in rows]

    def mark_delivered(self, readings: list[Reading]) -> None:
        now = self.clock.now()
        with self._tx() as db:
            db.executemany(
                "UPDATE readings SET status=1, delivered_at=? WHERE meter=? AND ts=? AND status=0",
                [(now, r.meter, r.ts) for r in readings],
            )
            db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES ('last_delivery', ?)", (repr(now),))

    def dead_letter(self, reading: Reading, reason: str, code: str | None = None) -> None:
        """Set a rejected reading aside with the cloud's reason and code (e.g. ``conflict``)."""
        with self._tx() as db:
            db.execute("UPDATE readings SET status=2 WHERE meter=? AND ts=?", (reading.meter, reading.ts))
            db.execute(
                "INSERT OR REPLACE INTO dead_letters(meter, ts, value, reason, at, code) VALUES (?,?,?,?,?,?)",
                (reading.meter, reading.ts, reading.value, reason[:500], self.clock.now(), code and code[:64]),
            )

    def set_meta(self, key: str, value: str | None) -> None:
        """Keep a small fact for ``status`` (e.g. the cloud's last clock offset)."""
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE k=?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return row[0] if row else None

    def requeue_dead(self) -> int:
        """Put dead letters back in the queue (after fixing the cause in the cloud)."""
        with self._tx() as db:
            n = db.execute("UPDATE readings SET status=0 WHERE status=2").rowcount
            db.execute("DELETE FROM dead_letters")
            return n

    def prune(self, retention_days: int) -> int:
        """Forget delivered readings older than the retention (they are in the cloud)."""
        cutoff = self.clock.now() - retention_days * 86400
        with self._tx() as db:
            return db.execute("DELETE FROM readings WHERE status=1 AND delivered_at < ?", (cutoff,)).rowcount

    # -- registrations and health -------------------------------------------------
    def registered(self, meter: str) -> str | None:
        row = self._db().execute("SELECT fingerprint FROM registrations WHERE meter=?", (meter,)).fetchone()
        return row[0] if row else None

    def set_registered(self, meter: str, fingerprint: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO registrations(meter, fingerprint, at) VALUES (?,?,?)",
                (meter, fingerprint, self.clock.now()),
            )

    # -- reporting ------------------------------------------------------------------
    def status(self) -> dict:
        db = self._db()
        pending, oldest = db.execute("SELECT count(*), min(ts) FROM readings WHERE status=0").fetchone()
        delivered = db.execute("SELECT count(*) FROM readings WHERE status=1").fetchone()[0]
        meta = dict(db.execute("SELECT k, v FROM meta"))
        last = meta.get("last_delivery")
        report = meta.get("cloud_report")
        report = json.loads(report) if report is not None else None
        dead = [
            {"MeterId": m, "TimeStamping": t, "value": v, "code": c, "reason": r}
            for m, t, v, c, r in db.execute("SELECT meter, ts, value, code, reason FROM dead_letters ORDER BY ts, meter")
        ]
        by_code: dict[str, int] = {}
        for d in dead:
            by_code[d["code"] or "none"] = by_code.get(d["code"] or "none", 0) + 1
        failing = [
            {"MeterId": m, "bus": b, "failures": f, "since": _iso(s), "last_error": e, "last_ok": _iso(ok)}
            for m, b, f, s, e, ok in db.execute(
                "SELECT meter, bus, failures, since, last_error, last_ok FROM meter_health WHERE failures>0 ORDER BY meter"
            )
        ]
        dropped = {m: {"count": c, "first": f, "last": last} for m, c, f, last in db.execute("SELECT * FROM dropped")}
        n_suspect = db.execute("SELECT count(*) FROM suspect").fetchone()[0]
        suspects = [
            {"MeterId": m, "TimeStamping": t, "value": v, "reason": r}
            for m, t, v, r in db.execute("SELECT meter, ts, value, reason FROM suspect ORDER BY ts DESC, meter LIMIT 50")
        ]
        clock = meta.get("clock")
        held = db.execute("SELECT count(*) FROM held").fetchone()[0]
        return {
            "pending": pending,
            "oldest_pending": oldest,
            "last_delivery": _iso(float(last)) if last is not None else None,
            "clock_offset": report.get("clock_offset") if report else None,  # from the last PUT /status
            "cloud_report": report,
            "delivered_kept": delivered,
            "dead_letters": len(dead),
            "dead_letters_by_code": by_code,
            "dead_letter_list": dead,
            "failing_meters": failing,
            "dropped_at_bound": sum(d["count"] for d in dropped.values()),
            "dropped_by_meter": dropped,
            "max_pending": self.max_pending,
            "suspect_readings": n_suspect,
            "suspect_list": suspects,
            "last_boundary": meta.get("last_boundary"),
            "held_readings": held,  # taken while the time was known wrong, not stamped yet
            "held_dropped": int(meta.get("held_dropped") or 0),  # held readings that could not be stamped right
            "clock": json.loads(clock) if clock is not None else None,
        }

    def all_readings(self) -> list[tuple[str, str, float, int]]:
        """Every reading kept (meter, ts, value, status): for tests and audits."""
        return self._db().execute("SELECT meter, ts, value, status FROM readings ORDER BY ts, meter").fetchall()


@dataclass(frozen=True)
class Take:
    """One meter's outcome in a poll: a reading (and counter state), or an error."""

    meter: str
    bus: str
    reading: Reading | None
    counter: tuple | None = None
    error: str | None = None
    suspect: str | None = None  # why the plausibility check holds this reading back


@dataclass(frozen=True)
class Held:
    """A reading taken while the time was wrong or not confirmed: its value (unwrapped) and when, on the
    monotonic clock of that boot and on the box's clock; stamped once the true time is known."""

    meter: str
    boot: str
    mono: float
    wall: float  # the box's clock when it was taken
    held_as: str  # the clock's state then: unconfirmed (the box's clock not known wrong) or a holding state
    value: float
    bus: str = ""
    counter: tuple | None = None  # the rollover state after it (stored with the counters, not with it)


def _count_meta(db, key: str, n: int) -> None:
    db.execute("INSERT INTO meta(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=CAST(v AS INTEGER)+excluded.v",
               (key, n))


def _health(db, meter: str, bus: str, now: float, error: str | None) -> None:
    if error is None:
        db.execute(
            "INSERT INTO meter_health(meter, bus, failures, since, last_error, last_ok) VALUES (?,?,0,NULL,NULL,?) "
            "ON CONFLICT(meter) DO UPDATE SET bus=excluded.bus, failures=0, since=NULL, last_ok=excluded.last_ok",
            (meter, bus, now),
        )
        return
    db.execute(
        "INSERT INTO meter_health(meter, bus, failures, since, last_error) VALUES (?,?,1,?,?) "
        "ON CONFLICT(meter) DO UPDATE SET bus=excluded.bus, failures=failures+1, "
        "since=COALESCE(since, excluded.since), last_error=excluded.last_error",
        (meter, bus, now, error[:300]),
    )


def _iso(t: float | None) -> str | None:
    return None if t is None else iso(t)
