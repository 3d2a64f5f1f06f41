"""Several gateway processes serving as one, on Redis (DESIGN.md, "More than one machine").

``redis.py`` opens the coredis client and says what we rely on in it; ``lease.py`` gives each
upstream session exactly one holder at a time, with a fencing token on its writes.
"""
