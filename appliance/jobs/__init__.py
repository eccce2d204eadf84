"""Jobs domain: scheduled jobs (cleanup, retention) under a database lease, and their runner.

The top domain: imports core and any domain below it.
"""
