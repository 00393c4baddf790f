"""Django settings of sendit: main.py (Django), config.py (pipeline), auth.py (lockdown)."""
from .main import *  # noqa: F401,F403
