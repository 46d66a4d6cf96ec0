"""Check installed versions against the security floors in security/floors.toml, offline.

    python scripts/audit_deps.py [--floors PATH]

Prints one line per package (ok, LOW or absent) and exits 1 if any installed version is below
its floor. It needs no network; for advisories newer than the file, run pip-audit (docs/limits.md).
"""
from __future__ import annotations

import argparse
import sys
try:  # Python 3.11+; on 3.10 (ZeroGPU's Python) the same parser from PyPI
    import tomllib  # novermin: the 3.10 branch below
except ModuleNotFoundError:
    import tomli as tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.version import Version

FLOORS = Path(__file__).resolve().parent.parent / "security" / "floors.toml"


def audit(floors: dict) -> tuple[list[str], int]:
    """(one line per package, number of packages below their floor)."""
    lines, low = [], 0
    for name, floor in floors.items():
        ids = ", ".join(floor.get("advisories", []))
        try:
            installed = version(name)
        except PackageNotFoundError:
            lines.append(f"absent {name}: not installed (floor {floor['min']})")
            continue
        # Local build tags (2.11.0+cpu) compare by their public version.
        if Version(Version(installed).public) < Version(floor["min"]):
            low += 1
            lines.append(f"LOW    {name} {installed} < {floor['min']}: upgrade ({ids})")
        else:
            lines.append(f"ok     {name} {installed} >= {floor['min']} ({ids})")
    return lines, low


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floors", type=Path, default=FLOORS, help="TOML file of minimum safe versions")
    args = parser.parse_args(argv)
    lines, low = audit(tomllib.loads(args.floors.read_text()))
    print("\n".join(lines))
    if low:
        print(f"{low} package{'s' if low > 1 else ''} below the security floor in {args.floors}.")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
