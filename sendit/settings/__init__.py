"""Django settings of sendit (main.py), made from sendit.config."""

from .main import *  # noqa: F401,F403
