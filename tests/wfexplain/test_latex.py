"""The exported metric tables compile cleanly: pdflatex, a plain one-column article, no overfull box, no warning.

Compiling needs ``pdflatex`` and ``booktabs.sty``: ``make test`` installs them (``make latex``, i.e.
scripts/ensure_latex.sh: Debian's texlive-latex-base and texlive-latex-recommended); without them
those tests are skipped, saying so. The escaping tests at the end need no LaTeX.
"""

import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils.data import Subset

from tests import ROOT
from wfexplain import export as E
from wfexplain import latex as L
from wfexplain.checkpoint import load
from wfexplain.data import DatasetInfo, stratified_subset
from wfexplain.evaluation import dataset_targets, evaluate, predict
from wfexplain.evaluation.metrics import forget_accuracy, retain_accuracy
from wfexplain.filtering import FilteredModel
from wfexplain.splits import checkpoint_split

CHECKPOINT = ROOT / "checkpoints" / "fmnist-cnn"
LIMIT = 300  # test images: enough for real numbers (100.0 and all), and a few seconds on a CPU
PDFLATEX = shutil.which("pdflatex")


def _booktabs() -> bool:
    kpsewhich = shutil.which("kpsewhich")
    return bool(kpsewhich and subprocess.run([kpsewhich, "booktabs.sty"], capture_output=True, text=True).stdout.strip())


needs_latex = pytest.mark.skipif(
    PDFLATEX is None or not _booktabs(),
    reason="pdflatex with booktabs.sty is not installed: run `make latex` (Debian: apt-get install "
           "texlive-latex-base texlive-latex-recommended); `make test` does it")
needs_checkpoint = pytest.mark.skipif(not (CHECKPOINT / "manifest.json").is_file(), reason="checkpoints/fmnist-cnn is missing")

# The smallest paper: the standard article class (10 pt, one column, 345 pt text width), booktabs, nothing else.
# \tracinglostchars=2 logs a character the font lacks as "Missing character" (and shows it on the terminal).
DOCUMENT = "\\documentclass{article}\n\\usepackage{booktabs}\n\\tracinglostchars=2\n\\begin{document}\n%s\n\\end{document}\n"
PROBLEMS = ("Overfull", "Underfull", "LaTeX Warning", "Missing character", "Warning", "warning")


def compile_clean(tmp_path: Path, tables: dict[str, bytes]) -> str:
    """Compile DOCUMENT with each table \\input from its own file (as a paper would); the final log."""
    for name, data in tables.items():
        (tmp_path / f"{name}.tex").write_bytes(data)
    (tmp_path / "paper.tex").write_text(DOCUMENT % "\n".join(rf"\input{{{name}}}" for name in tables))
    for _ in range(2):  # as latexmk would: the second run knows the labels ("Label(s) may have changed" otherwise)
        run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                             capture_output=True, text=True, errors="replace", timeout=120)
        log = (tmp_path / "paper.log").read_text(errors="replace")
        assert run.returncode == 0, log[-3000:]
    found = {p: [line for line in log.splitlines() if p in line] for p in PROBLEMS}
    assert not any(found.values()), {p: lines for p, lines in found.items() if lines}
    assert (tmp_path / "paper.pdf").stat().st_size > 0
    return log


@pytest.fixture(scope="module")
def fmnist():
    """The shipped fmnist-cnn, its evaluation report on LIMIT test images, and those images."""
    model = load(CHECKPOINT)
    test = checkpoint_split(model.checkpoint_manifest(), "test")
    report = evaluate(model, test, limit=LIMIT)
    targets = dataset_targets(test, model.num_classes)
    idx = stratified_subset(targets, LIMIT)  # the images evaluate scored
    return model, report, Subset(test, idx.tolist()), targets[idx]


@pytest.mark.slow
@needs_latex
@needs_checkpoint
def test_wfexplain_export_metrics_tex_compiles_cleanly(fmnist, tmp_path):
    """``metrics.tex`` exactly as ``wfexplain export`` writes it (export_all) for the shipped checkpoint."""
    model, report, _, _ = fmnist
    out = tmp_path / "exports"
    E.export_all(model, out, formats=["svg"], layers=["fc"], report=report)
    tex = (out / "metrics.tex").read_bytes()
    assert f"on {LIMIT} seeded".encode() in tex and tex.count(rb"\\") == 2 + 10 + 1  # headers, classes, mean
    compile_clean(tmp_path, {"metrics": tex})


@pytest.mark.slow
@needs_latex
@needs_checkpoint
@pytest.mark.parametrize("forget", [(0, 9), (0, 2, 4, 6, 9)], ids=["T-shirt+Ankle boot", "five classes"])
def test_dashboard_metrics_tex_with_a_forget_set_row_compiles_cleanly(fmnist, tmp_path, forget):
    """The Export page's ``metrics.tex`` (export.metrics_export, the call the page makes) with its forget-set row."""
    model, report, images, y = fmnist
    original, filtered = predict(model, images), predict(model, images, list(forget))
    names = [model.class_names[c] for c in forget]
    row = {"class": "forget set: " + " + ".join(names),  # as wfexplain_dashboard.scoring.view_set_row labels it
           "original_accuracy_pct": 100 * forget_accuracy(original, y, forget),
           "forget_accuracy_pct": 100 * forget_accuracy(filtered, y, forget),
           "retain_accuracy_pct": 100 * retain_accuracy(filtered, y, forget),
           "original_retain_accuracy_pct": 100 * retain_accuracy(original, y, forget)}
    table, caption, tex = E.metrics_export(model, report, "tab:fmnist-cnn", row)
    assert table.iloc[-1]["class"] == row["class"] and "The last row" in caption
    text = tex.decode()
    assert r"\raggedright forget set: T-shirt/top" in text  # too long for one line: it wraps instead of overflowing
    compile_clean(tmp_path, {"dashboard": tex})


HOSTILE = ["a & b", "100% cotton", "snake_case_class_name", "#hashtag", "$dollar", "~tilde", "x^2", "back\\slash",
           "{braces}", "Café", "[bracketed]", "*starred", "猫", "Łódź, þorn, ąę", "<less>|more", "two\n\nlines"]


def hostile_table() -> tuple[bytes, FilteredModel]:
    n = len(HOSTILE)
    info = DatasetInfo("hostile_data & co", tuple(HOSTILE), 1, 16, (0.5,), (0.5,))
    model = FilteredModel("cnn", info)
    report = {"num_images": 1600, "original_per_class": [1.0] * n,
              "forget_matrix": [[0.0 if k == c else 1.0 for k in range(n)] for c in range(n)]}
    row = {"class": "forget set: " + " + ".join(HOSTILE[:3] + HOSTILE[8:10]), "original_accuracy_pct": 100.0,
           "forget_accuracy_pct": 0.0, "retain_accuracy_pct": 100.0, "original_retain_accuracy_pct": 100.0}
    return E.metrics_export(model, report, "tab:hostile", row)[2], model


@pytest.mark.slow
@needs_latex
def test_hostile_class_names_compile_cleanly(tmp_path):
    """LaTeX's special characters, brackets and a star at a row's start, a blank line and non-ASCII names."""
    tex, _ = hostile_table()
    text = tex.decode()
    assert r"hostile\_data \& co" in text and "Café" in text and "Łódź, thorn, ae" in text and "{[}U+732B{]}" in text
    compile_clean(tmp_path, {"hostile": tex})


@pytest.mark.slow
@needs_latex
def test_generic_and_fraction_tables_compile_cleanly(tmp_path):
    """table_latex's other uses: a plain table (no accuracy header) and a metrics table in fractions, 3 decimals."""
    import pandas as pd

    generic = L.table_latex(pd.DataFrame({"my_col": [1, 2], "name": ["#1", "~x"]}), "A generic table", "tab:g")
    report = {"original_per_class": [0.9, 0.8], "forget_matrix": [[0.1, 0.8], [0.9, float("nan")]]}
    fractions = L.table_latex(E.metrics_table(report, ["x", "y"], mean_row=True), "Fractions", "tab:f")
    assert rb"{Accuracy}" in fractions and rb"(\%)" not in fractions
    compile_clean(tmp_path, {"generic": generic, "fractions": fractions})


# ---------------------------------------------------------------- escaping, without LaTeX


def test_latex_escape_specials_controls_and_unicode():
    assert L.latex_escape("a&b 50% x_y #1 $5 {z}") == r"a\&b 50\% x\_y \#1 \$5 \{z\}"
    assert L.latex_escape("~^\\") == r"\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert L.latex_escape("<a>|[b]") == r"\textless{}a\textgreater{}\textbar{}{[}b{]}"
    assert L.latex_escape("two\n\nlines\t\x00!") == "two  lines !"  # no \par inside a cell, no NUL
    assert L.latex_escape("Café Ünïcødé Łódź naïve ß Œuvre") == "Café Ünïcødé Łódź naïve ß Œuvre"  # LaTeX sets these
    assert L.latex_escape("ąę þorn Ðan ǖ ﬁ") == "ae thorn Dan u fi"  # accents LaTeX lacks dropped, the rest spelled
    assert L.latex_escape("猫 α😀") == "{[}U+732B{]} {[}U+03B1{]}{[}U+1F600{]}"  # no glyph: the code point


def test_long_text_wraps_only_when_needed():
    """A small table keeps its natural width; a cell too long for one line makes its column wrap (p{11em})."""
    import pandas as pd

    short = L.table_latex(pd.DataFrame({"class": ["Ankle boot", "T-shirt/top"], "v": [1.0, 2.0]}), "c", "l").decode()
    assert r"\begin{tabular}{@{}lr@{}}" in short and r"\raggedright" not in short
    tex, _ = hostile_table()
    text = tex.decode()
    assert r"\begin{tabular}{@{}p{11em}rrrr@{}}" in text
    assert r"\raggedright snake\_\allowbreak{}case" in text  # a long snake_case name may break after "_"
    assert r"\raggedright *starred" in text  # after \\, a star starting a plain cell would be \\*: it gets a guard
    assert "\n{}*starred &" in L.table_latex(pd.DataFrame({"n": ["*starred"], "v": [1]}), "c", "l").decode()
