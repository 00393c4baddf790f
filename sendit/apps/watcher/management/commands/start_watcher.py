from .watcher_start import Command  # noqa: F401  (the seed-era name)
