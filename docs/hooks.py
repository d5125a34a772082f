"""mkdocs hook: serve the repository files that the pages point at outside docs/.

The pages link to ``../benchmarks/results/...`` (and a few other repository files) with plain relative links, so
the same Markdown works on GitHub and in the built site. mkdocs only knows files under ``docs_dir``; this hook adds
every file of ``benchmarks/results/`` (figures, tables, the Markdown reports) and every other repository file a
page links to, at its repository path inside the site. The reports are rendered as pages; the rest is copied.
Nothing is fetched: the hook reads the working tree only.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LINK = re.compile(r"\]\((\.\./[^)\s#]+)")  # a Markdown link or image whose target leaves docs/


def _add(files: Files, config, path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    src_uri = f"../{rel}"  # what a link from a top-level page resolves to
    if files.get_file_from_path(src_uri) is not None:
        return
    # NOT_IN_NAV: the reports are reachable through the pages' links and need no nav entry
    file = File.generated(config, src_uri, abs_src_path=str(path), inclusion=InclusionLevel.NOT_IN_NAV)
    file.dest_uri = rel[: -len(".md")] + ".html" if rel.endswith(".md") else rel
    files.append(file)


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            _add(files, config, path)
    docs = Path(config.docs_dir)
    for page in list(files.documentation_pages()):
        if page.abs_src_path is None or not Path(page.abs_src_path).is_relative_to(docs):
            continue
        for target in LINK.findall(Path(page.abs_src_path).read_text(encoding="utf-8")):
            path = (Path(page.abs_src_path).parent / target).resolve()
            if path.is_file() and path.is_relative_to(REPO) and not path.is_relative_to(docs):
                _add(files, config, path)
    return files
