"""Every command a page or message suggests runs as printed: built by wfexplain.suggested, run here on a checkpoint."""

import shlex
import shutil

import pytest

from wfexplain import suggested
from wfexplain.cli import build_parser, main


def test_a_page_names_a_checkpoint_without_revealing_the_servers_disk(tmp_path):
    inside = tmp_path / "srv" / "checkpoints" / "fmnist-cnn"
    inside.mkdir(parents=True)
    assert suggested.shown_path(inside, cwd=tmp_path / "srv") == "checkpoints/fmnist-cnn"  # runs as printed from there
    assert suggested.shown_path(inside, cwd=tmp_path / "elsewhere") == "fmnist-cnn"


def test_arguments_are_quoted_for_a_shell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    odd = tmp_path / "check points" / "it's"
    cmd = suggested.benchmark(odd, 10)
    assert shlex.split(cmd) == ["wfexplain", "benchmark", "--checkpoint", "check points/it's", "--pairs", "5",
                                "--triples", "5"]
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert (args.checkpoint, args.pairs, args.triples) == ("check points/it's", 5, 5)
    assert suggested.benchmark("c", 3, tune=False) == "wfexplain benchmark --checkpoint c --pairs 3 --triples 1 --no-tune"
    assert suggested.benchmark("c", 2) == "wfexplain benchmark --checkpoint c --pairs 1"  # no triple of 2 classes
    assert suggested.export("c", []) == "wfexplain export --checkpoint c --out export-c"


def _run(cmd: str) -> int:
    argv = shlex.split(cmd)
    assert argv[0] == "wfexplain"
    return main(argv[1:])


@pytest.mark.slow
def test_each_suggested_command_runs_as_printed(trained_bars, bar_data, tmp_path, monkeypatch, capsys):
    """From the server's working directory, as a user pastes them: evaluate (records), export, remove."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained_bars, tmp_path / "checkpoints" / "bars")
    shutil.copytree(bar_data, tmp_path / "data")
    ckpt = tmp_path / "checkpoints" / "bars"
    cmds = [suggested.evaluate_sets(ckpt, 2, data_dir=str(tmp_path / "data")),
            suggested.export(ckpt, [0, 2]), suggested.remove(ckpt, [1], steps=20, threshold=0.4)]
    assert "--checkpoint checkpoints/bars" in cmds[0] and "--data-dir data" in cmds[0]
    assert cmds[2].endswith("--out bars-without-1.safetensors --steps 20 --threshold 0.4")
    for cmd in cmds:
        assert _run(cmd) == 0, (cmd, capsys.readouterr().err)
    assert (tmp_path / "export-bars").is_dir() and (tmp_path / "bars-without-1.safetensors").is_file()
    assert "pairs" in (ckpt / "manifest.json").read_text()  # --sets 2 --record recorded the pairs
    bench = build_parser().parse_args(shlex.split(suggested.benchmark(ckpt, 3))[1:])  # trains oracles: parsed only
    assert (bench.checkpoint, bench.pairs, bench.triples, bench.no_tune) == ("checkpoints/bars", 3, 1, False)
