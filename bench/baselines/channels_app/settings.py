"""Django settings for seed 000's Channels stack (benchmark baseline).

The channel layer is channels_redis on the Redis the harness starts (``REDIS_URL``, seed 000's
environment variable), with the library's default capacity and expiry.
"""

import os

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels", "bench.baselines.channels_app.stock"]
ROOT_URLCONF = "bench.baselines.channels_app.urls"
ASGI_APPLICATION = "bench.baselines.channels_app.asgi.application"
USE_TZ = True
DATABASES: dict = {}
REDIS_URL = os.environ.get("REDIS_URL", "redis://redis:6379/0")
KIS_MAX_SUBSCRIPTIONS = int(os.environ.get("KIS_MAX_SUBSCRIPTIONS", "40"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "WARNING"},
}
