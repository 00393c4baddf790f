from .watcher_stop import Command  # noqa: F401  (the original sendit's name)
