"""Audit domain: the hash-chained, tamper-evident log; search, export, checkpoints.

The lowest domain (everyone records here): imports core only. Names of accounts come
through a hook that `appliance.wiring` installs (`service.set_actor_names`).
"""
