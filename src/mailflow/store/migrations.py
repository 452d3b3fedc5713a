"""The core's tables: messages, outbox, timers, quarantine, sequences, health.

Owned by the store itself; the stages and plugins bring their own
(:class:`mailflow.store.schema.Schema`). Portable DDL, see that module.
"""

from __future__ import annotations

from mailflow.store.schema import Schema

CORE = Schema("core", (
    (
        """CREATE TABLE messages (
            queue_id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            state TEXT NOT NULL,
            verdict TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX messages_message_id ON messages (message_id)",
        "CREATE INDEX messages_state ON messages (state, updated_at)",
        """CREATE TABLE outbox (
            id {id},
            message TEXT,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            data {bytes} NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            next_attempt DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            sent_at DOUBLE PRECISION
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt)",
        "CREATE INDEX outbox_message ON outbox (message)",
        """CREATE TABLE timers (
            id {id},
            message TEXT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            due DOUBLE PRECISION NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION
        )""",
        "CREATE INDEX timers_due ON timers (state, due)",
        "CREATE INDEX timers_key ON timers (kind, key)",
        """CREATE TABLE quarantine (
            queue_id TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            data {bytes} NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE TABLE health (id INTEGER PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE sequences (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    ),
    (  # 2: the scheduler's retries of a failing timer handler, and when a timer fired
        "ALTER TABLE timers ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE timers ADD COLUMN next_attempt DOUBLE PRECISION",
        "ALTER TABLE timers ADD COLUMN last_error TEXT",
        "ALTER TABLE timers ADD COLUMN done_at DOUBLE PRECISION",
    ),
    (  # 3: several daemons on one database: whose message is in flight, who is alive
        "ALTER TABLE messages ADD COLUMN node TEXT",
        """CREATE TABLE nodes (
            node TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            heartbeat DOUBLE PRECISION NOT NULL
        )""",
    ),
    (  # 4: mail not worth sending late (an acknowledgement's stale promise) expires
        "ALTER TABLE outbox ADD COLUMN expires_at DOUBLE PRECISION",
    ),
))
