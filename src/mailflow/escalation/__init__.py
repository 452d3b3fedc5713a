"""Escalation to experts: the reply tokens and their store, the mail, the timers.

The ``escalate`` stage (:mod:`mailflow.stages.escalate`) forwards a case to an
expert with a reply address of its own; :mod:`.tokens` keeps what was
forwarded (and checks a reply's token), :mod:`.mail` writes the forwards,
reminders and supervisor notices, :mod:`.timers` fires the follow-ups.
"""
