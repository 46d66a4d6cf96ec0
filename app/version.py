"""The app's version: the record of every result names it (app/record.py), with the git commit."""
__version__ = "0.10.0"
