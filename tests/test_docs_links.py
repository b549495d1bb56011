"""Every citation a reader can follow resolves inside the repository.

* Relative markdown links in ``README.md``, ``docs/`` and the notebooks' markdown cells point to
  files that exist, and a ``#section`` anchor into a markdown file names one of its headings
  (GitHub's heading slugs).
* ``docs/<page>.md#<section>`` citations in the library, tests, solutions, benchmarks and
  notebooks (docstrings, comments, prose) name an existing page and section.
* No tracked file points outside the repository to the reference notes it was built from, or
  cites them by their old names.
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_DOCS_CITATION = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?(?![\w/-])")


def _strip_code(markdown: str) -> str:
    """Markdown without fenced code blocks and inline code (their brackets are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", markdown))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, markup and punctuation dropped,
    lower case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The heading anchors of a markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for _, title in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = github_slug(title)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(found)


def _markdown_sources() -> list[tuple[str, Path, str]]:
    """(label, folder links are relative to, markdown text) for the README, docs/ and notebooks."""
    sources = [("README.md", ROOT, (ROOT / "README.md").read_text(encoding="utf-8"))]
    for page in sorted((ROOT / "docs").rglob("*.md")):
        sources.append((str(page.relative_to(ROOT)), page.parent, page.read_text(encoding="utf-8")))
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                sources.append((f"{nb.relative_to(ROOT)} cell {i}", nb.parent, text))
    return sources


def _check_target(base: Path, target: str) -> str | None:
    """None if ``target`` (relative to ``base``) resolves, else what is wrong."""
    path_part, _, anchor = unquote(target).partition("#")
    path = (base / path_part).resolve() if path_part else None
    if path is not None:
        if not path.exists():
            return f"{target}: no such file"
        if ROOT not in path.parents and path != ROOT:
            return f"{target}: points outside the repository"
    if anchor and (path is None or path.suffix == ".md"):
        if path is None:
            return None  # same-file anchors are checked by the caller
        if anchor not in anchors(path):
            return f"{target}: {path.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return None


def test_relative_links_in_readme_docs_and_notebooks_resolve():
    problems, checked = [], 0
    for label, base, text in _markdown_sources():
        body = _strip_code(text)
        for target in _LINK.findall(body) + _HTML_LINK.findall(body):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                continue
            checked += 1
            if target.startswith("#"):
                page = ROOT / label.split(" cell ")[0]
                if page.suffix == ".md" and target[1:] not in anchors(page):
                    problems.append(f"{label}: {target}: no heading with that anchor")
                continue
            if (problem := _check_target(base, target)) is not None:
                problems.append(f"{label}: {problem}")
    assert checked > 100, f"only {checked} links found: is the link pattern broken?"
    assert not problems, "broken links:\n" + "\n".join(problems)


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. a source archive)
        skip = {".git", ".venv", "data", "runs", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def _text_files(suffixes: tuple[str, ...]) -> list[tuple[Path, str]]:
    files = []
    for path in _tracked_files():
        if path.suffix in suffixes and path.is_file():
            try:
                files.append((path, path.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                continue
    return files


def test_docs_citations_in_code_and_notebooks_name_real_sections():
    problems, checked = [], 0
    for path, text in _text_files((".py", ".ipynb", ".md", ".toml", ".cfg", ".txt")):
        for page, anchor in _DOCS_CITATION.findall(text):
            target = ROOT / page
            checked += 1
            if not target.is_file():
                problems.append(f"{path.relative_to(ROOT)}: {page} does not exist")
            elif anchor and anchor not in anchors(target):
                problems.append(f"{path.relative_to(ROOT)}: {page} has no section #{anchor}")
    assert checked > 50, f"only {checked} docs/ citations found: is the pattern broken?"
    assert not problems, "citations into docs/ that do not resolve:\n" + "\n".join(sorted(set(problems)))


def test_no_tracked_file_points_outside_the_repository_for_its_reference_notes():
    # the folder the notes came from, and the old names of its papers and data-sets pages, which
    # docs/ replaces with its own pages and section names; built from parts, so this file does
    # not match itself
    parts = [re.escape(p) for p in ("../" + "shared", "shared/" + "reference", "shared/" + "design")]
    parts.append(r"(?<![\w/.-])(?:papers|data" + r"sets)\.md\b")
    outside = re.compile("|".join(parts))
    offenders = sorted(
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
        for path, text in _text_files((".py", ".ipynb", ".md", ".toml", ".cfg", ".txt", ".yml", ".yaml", ""))
        for m in outside.finditer(text)
    )
    assert not offenders, "references to notes that do not ship with the repository:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("This project's interpretation", "this-projects-interpretation"),
        ("RefCOCO, RefCOCO+ and G-Ref", "refcoco-refcoco-and-g-ref"),
        ("Identity, code and weights", "identity-code-and-weights"),
        ("`instances.json`", "instancesjson"),
        ("Generalized variant: gRefShapes", "generalized-variant-grefshapes"),
        ("Links to [the index](README.md)", "links-to-the-index"),
    ],
)
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_the_checker_catches_a_broken_link_and_a_missing_anchor():
    page = ROOT / "docs" / "data.md"
    assert _check_target(page.parent, "data.md#metrics") is None
    assert "no heading" in _check_target(page.parent, "data.md#no-such-section")
    assert "no such file" in _check_target(page.parent, "nowhere.md")
    assert _check_target(ROOT / "notebooks", "../docs/methods/magnet.md#mask-grounding") is None
    assert "outside the repository" in _check_target(ROOT / "docs", "../..")
