"""A full disk (or any failed write) leaves what was there whole, says so by name, and leaves no temporaries."""
import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors import SafetensorError

import wfexplain
from wfexplain import atomic, checkpoint
from wfexplain.atomic import NoSpace, atomic_write, check_space, writing
from wfexplain.checkpoint import save_checkpoint
from wfexplain.export import export_all


def _no_space(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def test_a_checkpoint_write_that_runs_out_of_space_keeps_the_old_one(tmp_path, make_model, monkeypatch):
    path = tmp_path / "ck"
    save_checkpoint(make_model("cnn", seed=0), path, {"seed": 0})
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    monkeypatch.setattr(checkpoint, "save_file", _no_space)
    with pytest.raises(NoSpace, match=r"no space left to write .*ck \(No space left on device"):
        save_checkpoint(make_model("cnn", seed=1), path, {"seed": 1}, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ck.lock", "ck"]  # no temporaries


def test_the_cli_reports_a_full_disk_in_one_line(tmp_path, make_model, monkeypatch, capsys):
    save_checkpoint(make_model("cnn"), tmp_path / "ck", {"seed": 0})
    real = type(tmp_path).write_bytes

    def full(self, data):
        if ".exports.wfx-" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(type(tmp_path), "write_bytes", full)
    from wfexplain.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "exports"), "--no-metrics",
                 "--formats", "svg"]) == 1
    err = capsys.readouterr().err
    assert "no space left to write" in err and "Traceback" not in err
    assert not (tmp_path / "exports").exists()


@pytest.mark.slow
def test_a_real_write_limit_is_reported_as_no_space(tmp_path):
    """A real kernel failure (RLIMIT_FSIZE: EFBIG) inside safetensors' own writer, in a child process."""
    code = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import save_file
        from wfexplain.atomic import NoSpace, atomic_write
        try:
            atomic_write({str(tmp_path / "big.safetensors")!r}, lambda t: save_file({{"a": torch.zeros(100_000)}}, t))
        except NoSpace as e:
            print("NoSpace:", e)
    """)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert "no space left to write" in out.stdout and "File too large" in out.stdout, out.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.mark.slow
def test_export_is_whole_or_absent(tmp_path, make_model, monkeypatch):
    model = make_model("cnn")
    out = tmp_path / "exports"
    export_all(model, out, forget=[2], formats=["svg"])  # an earlier export's other files are kept
    export_all(model, out, forget=[1], formats=["svg"], overwrite=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = type(out).write_bytes
    calls = []

    def fail_third(self, data):
        calls.append(self)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(type(out), "write_bytes", fail_third)
    with pytest.raises(NoSpace, match="exports"):
        export_all(wfexplain.FilteredModel("cnn", model.info), out, forget=[1], formats=["svg"], overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not one new file mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exports.lock", "exports"]
    export_all(wfexplain.FilteredModel("cnn", model.info), out, forget=[1], formats=["svg"], overwrite=True)
    assert (out / "baked_forget_2.safetensors").is_file() and (out / "memory.csv").read_bytes() != before["memory.csv"]


@pytest.mark.parametrize("entry", ["notes.txt", "folder", "link"])
def test_export_refuses_a_directory_that_holds_what_it_did_not_write(tmp_path, make_model, entry):
    """It replaces its directory whole, so it never rebuilds (or drops, or follows) someone else's files."""
    out = tmp_path / "exports"
    out.mkdir(mode=0o700)
    {"notes.txt": lambda p: p.write_text("mine"), "folder": lambda p: p.mkdir(),
     "link": lambda p: p.symlink_to(tmp_path)}[entry](out / entry)
    with pytest.raises(ValueError, match=f"holds {entry}, which export does not write"):
        export_all(make_model("cnn"), out, formats=["svg"])
    (out / entry).unlink() if entry != "folder" else (out / entry).rmdir()
    export_all(make_model("cnn"), out, formats=["svg"])
    assert out.stat().st_mode & 0o777 == 0o700  # a private directory stays private


def test_export_without_force_refuses_files_another_export_wrote_meanwhile(tmp_path, make_model, monkeypatch):
    model, out = make_model("cnn"), tmp_path / "exports"
    real = atomic._carry

    def meanwhile(src, dst, names):  # under the lock, just before this export's files go in: another one got there
        (src / "memory.csv").write_text("the other export's")
        real(src, dst, names)

    out.mkdir()
    monkeypatch.setattr(atomic, "_carry", meanwhile)
    with pytest.raises(FileExistsError, match=r"memory\.csv"):
        export_all(model, out, formats=["svg"])
    assert (out / "memory.csv").read_text() == "the other export's"


def test_stale_temporaries_of_a_killed_file_writer_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".removed.safetensors.wfx-{dead.stdout.strip()}-abcd"
    stale.write_bytes(b"half")
    atomic_write(tmp_path / "removed.safetensors", lambda t: Path(t).write_bytes(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["removed.safetensors"]


def test_space_is_checked_before_long_work(tmp_path):
    check_space(tmp_path / "new" / "dir", 1)
    with pytest.raises(NoSpace, match="not enough space to write"):
        check_space(tmp_path, 1 << 62)
    with pytest.raises(OSError, match="cannot write x: boom"), writing("x"):
        raise SafetensorError("boom")
