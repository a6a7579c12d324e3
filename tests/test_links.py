"""Every relative link and file reference in the chapters, the README and CONTRIBUTING.md
points at something in this repository: Markdown links (and their #anchors, as GitHub makes
them from headings) and back-quoted repository paths such as `edu_seg/weak.py`."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "chapters").glob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
#: First path components that name something in the repository (a back-quoted path starting
#: with one of them must exist; other back-quoted paths are outputs such as `runs/demo/`).
TOP = ("edu_seg", "kernels", "chapters", "notebooks", "tests", "benchmarks", "zoo", ".ci",
       "book")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
#: Placeholders a reader fills in: a path holding one of these is a pattern, not a file.
PATTERN = re.compile(r"[<>*{}]|NN|\bname\b|\bMODEL\b|\.\.\.")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lstrip("#").strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    return {slug(line) for line in fenced_code_removed(path.read_text()).splitlines()
            if line.startswith("#")}


def fenced_code_removed(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_markdown_links_resolve(doc):
    problems = []
    for target in LINK.findall(fenced_code_removed(doc.read_text())):
        if re.match(r"^[a-z]+:", target):                  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = doc if not file else (doc.parent / file).resolve()
        if not path.exists():
            problems.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    assert not problems, f"{doc.name}: " + "; ".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_backquoted_repository_paths_exist(doc):
    missing = []
    for token in CODE.findall(doc.read_text()):
        path = token.rstrip(".,:;)").split("::")[0]
        if "/" not in path or not path.startswith(TOP) or PATTERN.search(path):
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{doc.name} names files that do not exist: {sorted(set(missing))}"


def test_every_chapter_links_the_code_it_teaches():
    for chapter in (ROOT / "chapters").glob("[0-9][0-9]-*.md"):
        links = [t for t in LINK.findall(chapter.read_text()) if t.startswith("../edu_seg")
                 or t.startswith("../kernels")]
        assert links, f"{chapter.name} links no code"


def test_the_link_checker_catches_what_it_should(tmp_path):
    assert slug("## The cross-entropy loss, derived") == "the-cross-entropy-loss-derived"
    assert slug("## 3. Region-based: R-CNN (2014)") == "3-region-based-r-cnn-2014"
    assert LINK.findall("see [x](../a.md#b) and [y](http://z)") == ["../a.md#b", "http://z"]
    assert PATTERN.search("chapters/NN-topic.md") and not PATTERN.search("edu_seg/weak.py")
