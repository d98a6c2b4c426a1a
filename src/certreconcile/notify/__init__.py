"""Notifications (``notify:``): what happened to certificates and agents, sent once to each sink.

- :mod:`~certreconcile.notify.events` finds the events (pure): issued, renewed, failed (with the error
  code and the next attempt), verification_failed from an apply's results; expiring and
  agent_unreachable from the stored state. Each has a key that any replica computes alike.
- :mod:`~certreconcile.notify.outbox` queues each event once per sink in the database (the first
  replica's row wins), then delivers the due rows, retried with backoff, each delivery audited.
- :mod:`~certreconcile.notify.webhook`, :mod:`~certreconcile.notify.email` and
  :mod:`~certreconcile.notify.apprise_sink` send one message; secrets come from the environment at
  send time and never reach the outbox, the audit, the logs or an error.
"""
