"""`python scripts/bench_app.py --json`: the app benchmark (see app/bench/server.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.bench.server import main  # noqa: E402

if __name__ == "__main__":
    main()
