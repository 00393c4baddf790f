from .watcher_stop import Command  # noqa: F401  (the seed-era name)
