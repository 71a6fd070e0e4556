"""core.io: the sha256 every manifest records and checks, and the lenient read of optional JSON side files."""

import hashlib

from edgelm.core.io import read_json, sha256_file


def test_sha256_file_reads_in_blocks_and_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # > one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_read_json_is_empty_for_a_missing_or_broken_file(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert read_json(tmp_path / "ok.json") == {"a": 1}
    assert read_json(tmp_path / "bad.json") == read_json(tmp_path / "binary.json") == read_json(tmp_path / "none") == {}
