"""The README and docs/*.md as a reader follows them: every relative link resolves."""

import glob
import os
import re

import pytest

from helpers import REPO

PAGES = [os.path.join(REPO, "README.md"), os.path.join(REPO, "savedmodel", "README.md")] + sorted(
    glob.glob(os.path.join(REPO, "docs", "*.md")))
# [text](target) outside code spans; the target up to a space or ")".
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text):
    """The relative link targets of a Markdown page (code blocks and spans left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:|^#|^mailto:", t)]


def anchors(path):
    """GitHub's anchors of a Markdown page's headings."""
    with open(path) as f:
        headings = re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", f.read(), flags=re.S),
                              flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_link_finder_sees_links_and_skips_code():
    assert relative_links("[a](docs/X.md) `[b](no.md)` [c](https://x.org) [d](#here)\n"
                          "```\n[e](code.md)\n```\n[f](../savedmodel/README.md#rest)") == [
        "docs/X.md", "../savedmodel/README.md#rest"]


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, REPO) for p in PAGES])
def test_every_relative_link_resolves(page):
    with open(page) as f:
        links = relative_links(f.read())
    dead = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), target))
        if not os.path.exists(path):
            dead.append(link)
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            dead.append(link)
    assert not dead, f"{os.path.relpath(page, REPO)}: dead links {dead}"
