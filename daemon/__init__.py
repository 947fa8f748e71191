"""lifeguard's daemon: the long-running process that ingests, evaluates, decides and acts.

Kept free of heavy imports so that the event contract and the CLI load instantly.
"""
