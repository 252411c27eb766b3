"""The shipped Online Retail file: its checksum, and a fetch that keeps only a verified copy."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from governance import retail_data


def test_the_shipped_file_is_the_one_the_checksum_names():
    retail_data.verify(retail_data.SHIPPED)
    with gzip.open(retail_data.SHIPPED, "rt") as f:
        assert f.readline().strip().split(",")[:3] == ["InvoiceNo", "StockCode", "Description"]


def test_fetch_keeps_a_verified_copy(tmp_path):
    out = retail_data.fetch(retail_data.SHIPPED.as_uri(), tmp_path / "retail.csv.gz", timeout_s=5)
    assert out.read_bytes() == retail_data.SHIPPED.read_bytes()


def test_a_corrupt_copy_is_refused_and_replaces_nothing(tmp_path):
    corrupt = tmp_path / "corrupt.csv.gz"
    data = bytearray(retail_data.SHIPPED.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    good = tmp_path / "retail.csv.gz"
    good.write_bytes(b"the copy that was here before")

    with pytest.raises(retail_data.ChecksumMismatch, match="SHA-256"):
        retail_data.fetch(corrupt.as_uri(), good, timeout_s=5)
    assert good.read_bytes() == b"the copy that was here before"
    assert set(tmp_path.iterdir()) == {corrupt, good}  # no partial download left behind
    assert retail_data.main(["verify", str(corrupt)]) == 1
    assert retail_data.main(["verify"]) == 0


def test_the_test_sample_is_lines_of_the_shipped_file():
    sample = Path(__file__).parent / "data" / "online_retail_sample.csv.gz"
    with gzip.open(sample, "rt") as f:
        lines = f.read().splitlines()
    with gzip.open(retail_data.SHIPPED, "rt") as f:
        shipped = f.read().splitlines()
    assert lines[0] == shipped[0] and len(lines) > 3000
    assert set(lines[1:]) <= set(shipped[1:])
