"""The app's version: the record of every result names it (app/views/record.py), with the git commit."""
__version__ = "0.11.0"
