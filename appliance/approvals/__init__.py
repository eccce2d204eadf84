"""Approvals domain: four-eyes approval of admin actions; the registry of executors.

Imports core, audit, auth and admin. Executors of other domains' kinds are registered
at start-up by `appliance.wiring`, never imported from here.
"""
