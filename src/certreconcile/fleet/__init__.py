"""The fleet: the applier and the agents on the server hosts (design.md section 9).

:mod:`certreconcile.fleet.protocol` is the wire contract both sides share. The applier's
side (fleet CA, client, the ``agent/target`` target) and the agent's side
(:mod:`certreconcile.agent`) each import it, never each other.
"""
