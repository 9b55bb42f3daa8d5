"""The `rerec` shell: help text, exit codes, one-line errors, artifact listing."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

pytestmark = pytest.mark.usefixtures("toy_schema")  # the `toy` artifact (conftest)


def test_help_lists_commands(rerec) -> None:
    result = rerec("--help")
    assert result.exit_code == 0
    for command in ("fetch", "artifacts"):
        assert command in result.stdout


def test_version_names_the_package_version(rerec) -> None:
    from importlib import metadata

    result = rerec("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"rerec {metadata.version('rerec')}")


def test_unknown_command_and_option_exit_2(rerec) -> None:
    assert rerec("no-such-command").exit_code == 2
    assert rerec("fetch", "--no-such-option").exit_code == 2


def test_user_error_is_one_line_exit_2_without_traceback(rerec) -> None:
    result = rerec("artifacts", "show", "toy")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no artifact 'toy' in ")
    assert result.stderr.rstrip().endswith("create it with `rerec toy`")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_debug_shows_the_traceback() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rerec_cli.main",
            "--workdir",
            "/nonexistent-rerec",
            "--debug",
            "artifacts",
            "show",
            "graph",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_real_console_script_exit_code() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rerec_cli.main",
            "--workdir",
            "/nonexistent-rerec",
            "artifacts",
            "show",
            "graph",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: no artifact 'graph' in /nonexistent-rerec; create it with `rerec build-graph`"
    ]


def test_artifacts_list_show_and_path(rerec, store) -> None:
    assert "no artifacts" in rerec("artifacts", "list").stdout
    parent = store.build(
        "toy", config={"a": 1}, build=lambda w: w.write_table("t", pl.DataFrame({"x": [1, 2]}))
    ).artifact
    child = store.build(
        "toy",
        config={"a": 2},
        inputs=[parent],
        build=lambda w: w.write_table("t", pl.DataFrame({"x": [3]})),
    ).artifact
    listed = rerec("artifacts", "list")
    assert listed.exit_code == 0 and child.version in listed.stdout
    assert parent.version not in listed.stdout
    assert parent.version in rerec("artifacts", "list", "--all").stdout
    shown = rerec("artifacts", "show", "toy")
    assert shown.exit_code == 0
    assert f"toy@{parent.version}" in shown.stdout and "lineage" in shown.stdout
    assert rerec("artifacts", "path", f"toy@{parent.version}").stdout.strip() == str(parent.path)
    as_json = rerec("artifacts", "show", "toy", "--json")
    assert '"content_hash"' in as_json.stdout


def test_cli_start_up_does_not_import_torch() -> None:
    # torch + torch-geometric cost ~3 s per command; only the stages that train import them.
    code = "import sys, rerec_cli.main; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr
