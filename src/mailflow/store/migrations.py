"""Versioned schema migrations: entry N brings the schema from version N to N+1.

Never edit a released entry; append a new one. The SQL is kept to what
SQLite and PostgreSQL both accept.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE messages (
            queue_id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            state TEXT NOT NULL,
            verdict TEXT NOT NULL,
            received_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            details TEXT NOT NULL
        )""",
        "CREATE INDEX messages_message_id ON messages (message_id)",
        "CREATE INDEX messages_state ON messages (state, updated_at)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message TEXT,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            mail_from TEXT NOT NULL,
            rcpt_to TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL,
            next_attempt REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            lease_owner TEXT,
            lease_until REAL,
            sent_at REAL
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt)",
        "CREATE INDEX outbox_message ON outbox (message)",
        """CREATE TABLE timers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message TEXT,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            due REAL NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            lease_owner TEXT,
            lease_until REAL
        )""",
        "CREATE INDEX timers_due ON timers (state, due)",
        "CREATE INDEX timers_key ON timers (kind, key)",
        """CREATE TABLE quarantine (
            queue_id TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE TABLE health (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
    ),
)
