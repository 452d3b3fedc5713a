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
    (
        # cases: one conversation with a customer, numbered
        """CREATE TABLE cases (
            number TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            customer TEXT NOT NULL,
            customer_name TEXT NOT NULL,
            subject TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            route TEXT,
            priority TEXT,
            assignee TEXT,
            language TEXT,
            promised_at REAL,
            parent TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX cases_customer ON cases (customer)",
        """CREATE TABLE case_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_number TEXT NOT NULL,
            message_id TEXT NOT NULL,
            role TEXT NOT NULL,
            sender TEXT NOT NULL,
            queue_id TEXT,
            created_at REAL NOT NULL
        )""",
        # one customer message belongs to one case, even when two copies race
        "CREATE UNIQUE INDEX case_messages_customer ON case_messages (message_id)"
        " WHERE role = 'customer' AND message_id <> ''",
        "CREATE INDEX case_messages_message_id ON case_messages (message_id)",
        "CREATE INDEX case_messages_case ON case_messages (case_number, sender)",
        "CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        """CREATE TABLE fingerprints (
            sender TEXT NOT NULL,
            digest TEXT NOT NULL,
            case_number TEXT NOT NULL,
            queue_id TEXT,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX fingerprints_sender ON fingerprints (sender, digest, created_at)",
        """CREATE TABLE acks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_number TEXT NOT NULL,
            address TEXT NOT NULL,
            message_id TEXT NOT NULL,
            queue_id TEXT,
            sent_at REAL NOT NULL
        )""",
        "CREATE INDEX acks_address ON acks (address, sent_at)",
        "CREATE INDEX acks_sent_at ON acks (sent_at)",
        "CREATE INDEX acks_message_id ON acks (message_id)",
        """CREATE TABLE ack_bounces (
            address TEXT NOT NULL,
            ack_message_id TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX ack_bounces_address ON ack_bounces (address, at)",
    ),
    (
        # who can take mail now: set by `mailflow agents set NAME away|present`
        """CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            updated_at REAL NOT NULL
        )""",
        # where each team's round-robin stands
        "CREATE TABLE route_state (team TEXT PRIMARY KEY, turn INTEGER NOT NULL)",
        "CREATE INDEX cases_assignee ON cases (assignee, status)",
    ),
)
