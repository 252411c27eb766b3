"""The Online Retail file that ships with the project, and fetching a verified copy.

    python -m governance.retail_data verify [PATH]                  # checksum of a copy
    python -m governance.retail_data fetch --url URL --out PATH     # download, keep if it matches

The file and its licence: `data_sets/online_retail/README.md`. A download is written next to
PATH first and moved into place only when its SHA-256 is the shipped file's, so a truncated or
altered copy never replaces a good one.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path

# The shipped copy (a checkout's data_sets/ folder; not part of the installed packages).
SHIPPED = Path(__file__).resolve().parent.parent / "data_sets/online_retail/online_retail.csv.gz"
SHA256 = "22a3f4623cf487a48881c10bc8a02033df6f81c8dd2783100b62c35854a6b62e"
CHUNK = 1 << 20


class ChecksumMismatch(ValueError):
    """The file is not the Online Retail file this project was built and tested on."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str = SHA256) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{path}: SHA-256 {actual}, expected {expected}. The file is truncated, altered or "
            "another export; download it again (python -m governance.retail_data fetch)."
        )


def fetch(url: str, out: Path, expected: str = SHA256, timeout_s: float = 60.0) -> Path:
    """Downloads `url` to `out` when its SHA-256 is `expected`; raises ChecksumMismatch (and
    leaves `out` as it was) otherwise. `timeout_s` bounds each network wait."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
        verify(partial, expected)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m governance.retail_data",
        description="Verify or fetch the UCI Online Retail file (see data_sets/online_retail).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check a copy's SHA-256 against the shipped one")
    check.add_argument(
        "path", type=Path, nargs="?", default=SHIPPED, help="file to check (default: shipped)"
    )
    get = commands.add_parser("fetch", help="download a copy; keep it only if its SHA-256 matches")
    get.add_argument("--url", required=True, help="where to download from (http(s):// or file://)")
    get.add_argument("--out", type=Path, required=True, help="where to write the verified file")
    get.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per network wait (default 60)"
    )
    for command in (check, get):
        command.add_argument(
            "--sha256", default=SHA256, help="expected checksum (default: the shipped file's)"
        )
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            verify(args.path, args.sha256)
            print(f"{args.path}: SHA-256 ok")
        else:
            fetch(args.url, args.out, args.sha256, args.timeout)
            print(f"{args.out}: downloaded, SHA-256 ok")
    except ChecksumMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
