"""FSDP (fully_shard, gloo on CPU) over two processes ends with the parameters of a single process."""

from __future__ import annotations

from tests.test_train_distributed import compare_with_two_processes, single_process  # noqa: F401


def test_fsdp_two_processes_match_one(single_process, tmp_path, oasis_dir):  # noqa: F811
    compare_with_two_processes("fsdp", single_process, tmp_path / "fsdp", oasis_dir)
