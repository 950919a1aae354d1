"""``wfexplain dashboard`` / ``python -m wfexplain_dashboard``: start the dashboard, installed or in a checkout.

Runs ``streamlit run`` on this package's ``app.py`` with the settings of ``streamlit.toml`` (the one file that
holds them; a checkout's ``.streamlit/config.toml`` links to it for ``streamlit run app.py``). Options:
``--checkpoint-dir DIR`` (repeatable; added to ``$WFEXPLAIN_CHECKPOINT_DIRS``), ``--port``, ``--address``;
anything else is passed to ``streamlit run`` as it is. Nothing here imports Streamlit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def streamlit_flags(path: Path = HERE / "streamlit.toml") -> list[str]:
    """``streamlit.toml`` as ``--section.key=value`` command-line flags."""
    flags = []
    for section, values in tomllib.loads(path.read_text()).items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def command(argv: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment of ``wfexplain dashboard ARGV``."""
    parser = argparse.ArgumentParser(prog="wfexplain dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-dir", action="append", default=[], metavar="DIR",
                        help="a checkpoint, or a folder of them, the dashboard may open (repeatable)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--address", help="address to bind (default: Streamlit's)")
    args, rest = parser.parse_known_args(argv)
    missing = [d for d in args.checkpoint_dir if not Path(d).expanduser().is_dir()]
    if missing:
        parser.error(f"--checkpoint-dir {missing[0]} is not a directory")
    env = dict(os.environ)
    dirs = [p for p in env.get("WFEXPLAIN_CHECKPOINT_DIRS", "").split(os.pathsep) if p]
    dirs += [str(Path(d).expanduser().resolve()) for d in args.checkpoint_dir]
    if dirs:
        env["WFEXPLAIN_CHECKPOINT_DIRS"] = os.pathsep.join(dirs)
    cmd = [sys.executable, "-m", "streamlit", "run", str(HERE / "app.py"), "--browser.gatherUsageStats=false",
           "--server.fileWatcherType=none", f"--server.port={args.port}", *streamlit_flags()]
    if args.address:
        cmd.append(f"--server.address={args.address}")
    return cmd + rest, env


def main(argv: list[str] | None = None) -> int:
    if importlib.util.find_spec("streamlit") is None:
        print("error: the dashboard needs Streamlit: pip install 'wfexplain[dashboard]'", file=sys.stderr)
        return 1
    cmd, env = command(argv)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
