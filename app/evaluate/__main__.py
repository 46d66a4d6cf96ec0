"""`python -m app.evaluate ...` (also under torchrun); see app/evaluate/cli.py."""
import sys

from app.evaluate.cli import main

sys.exit(main())
