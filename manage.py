#!/usr/bin/env python
"""Django's command-line utility for sendit."""
import sys

if __name__ == "__main__":
    from sendit.config import start

    start()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
