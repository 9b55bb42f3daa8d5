"""What the user sees when something goes wrong: one line on stderr, the right exit code, no
traceback or box; signals; a broken store listed rather than refused; a policy that still
loads after its workdir moved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from stages.core.errors import UserError
from stages.core.store import ArtifactStore

pytestmark = pytest.mark.usefixtures("toy_schema")  # the `toy` artifact (conftest)
ROOT = Path(__file__).resolve().parents[1]


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def build_toy(store: ArtifactStore, name: str = "toy", a: int = 1):
    return store.build(
        name, config={"a": a}, build=lambda w: w.write_table("t", pl.DataFrame({"x": [a]}))
    ).artifact


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory) -> tuple[ArtifactStore, Path]:
    """A graph, a query split and a tiny model stored as the `smollm2-135m` artifact."""
    from stages.llm.prompts import SYSTEM_PROMPT
    from stages.queries.config import MakeQueriesConfig
    from stages.queries.stage import make_queries
    from tests.fixtures.graphs import build_toy_graph, toy_catalogue
    from tests.fixtures.tiny_llm import write_tiny_llm

    root = tmp_path_factory.mktemp("messages")
    store = ArtifactStore(root / "workdir")
    build_toy_graph(store, root, toy_catalogue())
    make_queries(
        store, MakeQueriesConfig(train_size=2, valid_size=1, test_size=2, candidates=5, seed=1)
    )
    queries = store.resolve("queries").read("queries")
    model = write_tiny_llm(root / "tiny-llm", [SYSTEM_PROMPT, *queries["text"].to_list()])
    store.build(
        "smollm2-135m",
        config={"tiny": True},
        build=lambda w: shutil.copytree(model, w.file("model"), dirs_exist_ok=True),
    )
    return store, root


# ------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["eval", "--limit", "abc"],
            "error: rerec eval: invalid value for '--limit': 'abc' is not a valid integer "
            "(see rerec eval --help)",
        ),
        (["no-such-command"], "error: rerec: no such command 'no-such-command'"),
        (["artifacts", "list", "-z"], "error: rerec artifacts list: no such option: -z"),
        (["recommend", "--k", "0"], "'0' should be greater than or equal to 1"),
        (["artifacts", "show"], "error: rerec artifacts show: missing argument"),
    ],
)
def test_command_line_mistake_is_one_line_exit_2_without_a_box(rerec, args, message) -> None:
    result = rerec(*args)
    assert result.exit_code == 2
    assert message in one_line(result.stderr)
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


def test_help_without_arguments_still_shows_the_help(rerec) -> None:
    result = rerec("artifacts")
    assert "list" in result.stdout and "error" not in result.stderr


def test_ctrl_c_during_start_up_is_one_line_exit_130(tmp_path) -> None:
    # SIGINT arrives while the CLI's libraries are still being imported.
    code = textwrap.dedent(
        """
        import os, signal, sys

        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "typer":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, Interrupt())
        from rerec_cli.main import main
        sys.argv = ["rerec", "artifacts", "list"]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env()
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == ["error: interrupted"]


def test_sigterm_removes_the_write_in_progress_and_exits_143(tmp_path) -> None:
    # A command writing an artifact is terminated mid-write: the temporary folder goes, the
    # store is as it was, and the user reads one line.
    ready = tmp_path / "ready"
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import polars as pl
        import schemas
        from schemas import ArtifactSchema, TableSchema
        schemas.ARTIFACTS["toy"] = ArtifactSchema(
            name="toy", version=1, kind="test", description="toy", produced_by="rerec toy",
            tables={{"t": TableSchema("t", {{"x": pl.Int64}})}},
        )
        from rerec_cli.app import app, state

        @app.command("slow-toy")
        def slow_toy() -> None:
            def build(w):
                w.write_table("t", pl.DataFrame({{"x": [1]}}))
                Path({str(ready)!r} + '.tmp').write_text(str(w.path))  # then renamed:
                Path({str(ready)!r} + '.tmp').rename({str(ready)!r})  # never read half-written
                time.sleep(60)

            state.store.build("toy", config={{}}, build=build)

        from rerec_cli.main import main
        sys.argv = ["rerec", "--workdir", {str(tmp_path / "workdir")!r}, "slow-toy"]
        main()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate()[1]
    assert Path(ready.read_text()).is_dir()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == ["error: terminated"]
    assert not Path(ready.read_text()).exists()
    assert not (tmp_path / "workdir" / "toy").exists()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# ------------------------------------------------------------------------- the workdir


@pytest.mark.parametrize("below", [False, True])
def test_workdir_that_is_a_file_is_one_line_exit_2(rerec, tmp_path, below) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    workdir = afile / "sub" if below else afile
    result = rerec("--workdir", str(workdir), "artifacts", "list")
    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert line.endswith(f"{afile} is a file, not a folder")
    assert "no artifacts" not in result.stdout


def test_write_refused_by_the_system_is_one_line_exit_2(rerec, store, monkeypatch) -> None:
    # Tests run as root, who may write anywhere: the refusal is simulated where the store
    # creates its folders.
    real_mkdir = os.mkdir

    def refuse(path, *args, **kwargs):
        if Path(path).is_relative_to(store.root):
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    store.root.mkdir()
    monkeypatch.setattr(os, "mkdir", refuse)
    result = rerec("fetch", "ml-100k")
    assert result.exit_code == 2, result.stderr
    assert one_line(result.stderr) == f"error: cannot write to {store.root}: permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_read_only_workdir_is_one_line_exit_2(rerec, store) -> None:
    store.root.mkdir()
    store.root.chmod(0o555)
    try:
        result = rerec("fetch", "ml-100k")
    finally:
        store.root.chmod(0o755)
    assert result.exit_code == 2
    assert "permission denied" in one_line(result.stderr)


# ------------------------------------------------------------------------- artifacts list


def test_artifacts_list_marks_a_broken_manifest_and_a_dangling_latest(rerec, store) -> None:
    good = build_toy(store, "toy", 1)
    bad = build_toy(store, "toy", 2)  # now the latest
    (bad.path / "manifest.json").write_text("{not json")
    gone = build_toy(store, "toy2", 3)
    shutil.rmtree(gone.path)  # toy2's latest points nowhere
    listed = rerec("artifacts", "list")
    assert listed.exit_code == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "│" in line]
    assert any(bad.version in r and "broken" in r for r in rows), listed.stdout
    assert any("toy2" in r and gone.version in r and "broken" in r for r in rows)
    assert f"broken: toy@{bad.version}: unreadable manifest" in listed.stdout
    assert f"broken: toy2@{gone.version}: latest -> {gone.version}, which is missing" in (
        listed.stdout
    )
    every = rerec("artifacts", "list", "--all")
    assert every.exit_code == 0 and good.version in every.stdout and bad.version in every.stdout


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["binary", "not-utf8", "folder"])
def test_config_file_that_is_not_yaml_text_is_one_line_exit_2(rerec, tmp_path, kind) -> None:
    path = tmp_path / "config.yaml"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\x00\x01binary" if kind == "binary" else b"\xff\xfe\x81 x")
    result = rerec("eval", "--baseline", "random", "--config", str(path))
    assert result.exit_code == 2
    what = "is a folder, not a YAML file" if kind == "folder" else "is a binary file, not YAML"
    assert one_line(result.stderr).startswith(f"error: config file {path} {what}")


def test_chat_with_stdin_closed_is_one_line_exit_2(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rerec_cli", "-w", str(tmp_path), "recommend", "a comedy", "--chat"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        preexec_fn=lambda: os.close(0),
    )
    assert proc.returncode == 2
    assert one_line(proc.stderr) == "error: --chat reads requests from stdin, but stdin is closed"


def test_chat_with_empty_stdin_and_no_request_is_one_line_exit_2(rerec) -> None:
    result = rerec("recommend", "--chat")  # the test runner's stdin is empty
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("error: --chat: stdin ended before the first")


def test_eval_of_a_baseline_writes_nothing_to_stderr(toy_workdir, monkeypatch) -> None:
    from tests.fixtures.cli import invoke

    store, _ = toy_workdir
    result = invoke(store.root, monkeypatch, "eval", "--baseline", "random", "--split", "test")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


# ------------------------------------------------------------------------- portable policy


def test_policy_adapter_loads_with_plain_libraries_after_the_workdir_moved(
    toy_workdir, tmp_path, monkeypatch
) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    from tests.fixtures.cli import invoke

    store, _ = toy_workdir
    args = ["train", "--model", "smollm2-135m", "--no-pas", "--steps", "1", "--limit", "2"]
    args += ["--prompts-per-step", "1", "-G", "2", "--max-completion-length", "8", "--quiet"]
    result = invoke(store.root, monkeypatch, *args, "--output", "policy")
    assert result.exit_code == 0, result.output
    policy = store.resolve("policy")
    relative = f"../../../smollm2-135m/{store.resolve('smollm2-135m').version}/model"
    config = json.loads(policy.file("model/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == relative
    assert str(store.root) not in policy.file("model/README.md").read_text()
    # the base's weights are links, recorded as such (not hashed into the policy)
    links = {f.path: f.link for f in policy.manifest.files if f.link}
    assert links["model/model.safetensors"] == f"{relative}/model.safetensors"
    assert all(f.bytes == 0 for f in policy.manifest.files if f.link)

    moved = tmp_path / "elsewhere" / "workdir"
    shutil.copytree(store.root, moved, symlinks=True)
    x = torch.tensor([[1, 2, 3, 4]])
    base = AutoModelForCausalLM.from_pretrained(store.resolve("smollm2-135m").file("model"))
    want = PeftModel.from_pretrained(base, policy.file("model")).eval()(x).logits
    hidden = store.root.with_name("workdir-hidden")  # the original is gone while we load
    store.root.rename(hidden)
    try:
        adapter = moved / "policy" / policy.version / "model"
        unrelated = tmp_path / "unrelated"
        unrelated.mkdir()
        monkeypatch.chdir(unrelated)
        # transformers: the folder is a complete model with an embedded adapter
        net = AutoModelForCausalLM.from_pretrained(adapter).eval()
        torch.testing.assert_close(net(x).logits, want)
        # peft: the base path is relative to the adapter folder
        monkeypatch.chdir(adapter)
        net = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
        torch.testing.assert_close(net(x).logits, want)
        # rerec: through the store, from anywhere
        monkeypatch.chdir(unrelated)
        from stages.llm.generation import load_generator

        gen = load_generator(
            ArtifactStore(moved), policy="policy", model=None, device="cpu", precision="fp32"
        )
        torch.testing.assert_close(gen.model(x).logits, want)
        # the moved policy verifies; without its base, its links are named as broken
        ArtifactStore(moved).verify(ArtifactStore(moved).resolve("policy"))
        shutil.rmtree(moved / "smollm2-135m")
        missing = r"links to \.\./\.\./\.\./smollm2-135m/.*, which is missing"
        with pytest.raises(UserError, match=missing):
            ArtifactStore(moved).resolve("policy")
    finally:
        hidden.rename(store.root)
