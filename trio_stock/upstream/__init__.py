"""Upstream providers: the shared contract and reconnect policy, and one module per provider."""
