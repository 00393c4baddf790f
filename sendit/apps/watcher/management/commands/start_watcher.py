from .watcher_start import Command  # noqa: F401  (the original sendit's name)
