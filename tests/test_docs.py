"""The documentation (README.md, docs/*.md): the site builds offline, every command parses, every link resolves.

"Every command in the docs is one that a test runs or a results file shows" is kept by parsing, never by running:
each ``stainshift ...`` line of a fenced shell block must be accepted by the real argument parser, and its command
(``synth train``, ``pipeline run``, ...) and each of its options must be ones that some test passes on the command
line (read from tests/*.py and benchmarks/*.py with ``ast``), a results file shows (benchmarks/results/) or a
pipeline recipe runs (pipelines/*.toml). Each option named in inline code or in the command-line tables must exist,
and each relative link, image and repository path must point at a file. A renamed flag, command or figure fails here,
and so does a doc example whose options no test uses.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import io
import itertools
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stainshift.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}  # ```text / ```toml / ```python blocks are not commands
# Placeholders a command may use where the parser wants a value of a type (the help's own spelling).
PLACEHOLDERS = {"S": "0", "N": "1", "K": "1"}
SEPARATORS = {"&&", "||", ";", "|"}
REPO_PATH = re.compile(r"(?<![\w./-])((?:benchmarks|pipelines|stainshift|tests|docs)/[\w./-]*\w)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<img\s[^>]*src=\"([^\"]+)\"")
INLINE = re.compile(r"`([^`\n]+)`")


def _ids(pages: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in pages]


def split_page(text: str) -> tuple[list[tuple[int, str, str]], str]:
    """The fenced blocks ``(first line number, language, body)`` and the prose with the blocks blanked out."""
    blocks, prose, body, lang, start = [], [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*(```+|~~~+)\s*([\w+-]*)", line)
        if body is None and fence:
            body, lang, start = [], fence.group(2).lower(), number + 1
            prose.append("")
        elif body is not None and fence and not fence.group(2):
            blocks.append((start, lang, "\n".join(body)))
            body = None
            prose.append("")
        elif body is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    return blocks, "\n".join(prose)


def commands_in(block: str) -> list[list[str]]:
    """The argument lists of every ``stainshift`` invocation in a shell block (comments, prompts, ``\\`` handled)."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\s*(\$|>)\s+", "", line).strip()
        if not line or line.startswith("#"):
            continue
        tokens = shlex.split(line, comments=True)
        segments = [list(g) for sep, g in itertools.groupby(tokens, lambda t: t in SEPARATORS) if not sep]
        for seg in segments:
            while seg and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", seg[0]):  # VAR=value before the command
                seg = seg[1:]
            for i, token in enumerate(seg):
                if (token == "stainshift" or token.endswith("/stainshift")) and (i == 0 or seg[i - 1] == "-m"):
                    found.append(seg[i + 1:])
                    break
    return found


def variants(args: list[str]) -> list[list[str]]:
    """``[--opt]`` brackets dropped (the option included); ``a|b`` tried one alternative at a time."""
    args = [a.strip("[]") for a in args]
    args = [PLACEHOLDERS.get(a, a) for a in args if a]
    base = [a.split("|")[0] for a in args]
    out = [base]
    for i, a in enumerate(args):
        for alt in a.split("|")[1:]:
            out.append([*base[:i], alt, *base[i + 1:]])
    return out


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """No abbreviated options: a doc's ``--epoch`` must not pass as a prefix of a renamed ``--epochs``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)
    return parser


PARSER = strict(build_parser())


def parse_error(args: list[str]) -> str | None:
    """None when the parser accepts ``args`` (``--help`` included), else its message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            PARSER.parse_args(args)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def leaf(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser that ``words`` name, and the words left after its name."""
    parser = PARSER
    while words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or words[0] not in subs[0].choices:
            break
        parser, words = subs[0].choices[words[0]], words[1:]
    return parser, words


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def inline_commands(prose: str) -> list[str]:
    return [span for span in INLINE.findall(prose) if re.match(r"(\S*/)?stainshift\s+-*\w", span)]


# -- what the tests run, the results files show and the recipes run ------------------------------------------------
# Read from the source text with ``ast``, never by running anything: every argument list that starts with a command,
# wherever it is written (``main([...])``, ``cli(...)``, ``run(capsys, ...)``, ``[sys.executable, "-m",
# "stainshift", ...]``, a parametrize list, a ``python -c`` program), ``*name`` resolved to the lists the name is
# assigned, looped over or parametrized with, and calls to a wrapper (``def _run(root, *args): main(["pipeline",
# "run", ..., *args])``) counted as that command. Then the commands the results files show (their inline code and
# shell blocks, the ``command`` fields of their JSON, the docstring of the benchmark script they name) and the
# ``run`` of every step of the pipeline recipes.

TOP = set(PARSER._subparsers._group_actions[0].choices)  # demo, simulate, domains, ...
FLAG = re.compile(r"--?[A-Za-z][\w-]*")
RESULTS = ROOT / "benchmarks" / "results"
Key = tuple[str, ...]

# Options that doc commands show but no test passes on the command line; each is a command-line test owed (a test
# below fails once a test or results file uses it, so the entry goes). The reason says where the behaviour is tested.
NOT_RUN: dict[tuple[Key, str], str] = {
    (("pipeline", "run"), "--dry-run"): "tests/test_pipeline.py::test_from_skip_and_dry_run, through run_recipe",
    (("pipeline", "run"), "--from"): "tests/test_pipeline.py::test_from_skip_and_dry_run, through run_recipe",
    (("pipeline", "run"), "--skip"): "tests/test_pipeline.py::test_from_skip_and_dry_run, through run_recipe",
    (("domains", "add"), "--fields"): "tests/test_fields.py, through add_domain(..., fields=True)",
    (("classify", "train"), "--loss"): "tests/test_classify.py::test_focal_group_training_with_lr_find_is_tracked",
}


def _is_stainshift(word: object) -> bool:
    return isinstance(word, str) and (word == "stainshift" or word.endswith("/stainshift"))


def _is_flag(word: object) -> bool:
    return isinstance(word, str) and FLAG.fullmatch(word.split("=")[0]) is not None


def command_of(words: list[str]) -> tuple[Key, argparse.ArgumentParser]:
    """The command (``("synth", "train")``) that the leading ``words`` name, and its parser."""
    parser, rest = leaf(list(words))
    return tuple(words[:len(words) - len(rest)]), parser


def canonical(parser: argparse.ArgumentParser, flag: str) -> str:
    """``-q`` and ``--quiet`` are one option: its longest spelling (an unknown flag stays as written)."""
    flag = flag.split("=")[0]
    for action in parser._actions:
        if flag in action.option_strings:
            return max(action.option_strings, key=len)
    return flag


def logical_lines(block: str) -> list[tuple[int, str]]:
    """``(line offset, text)`` of each line of a shell block, ``\\`` continuations joined."""
    out, pending, first = [], [], 0
    for i, line in enumerate(block.splitlines()):
        if not pending:
            first = i
        pending.append(line[:-1] if line.endswith("\\") else line)
        if not line.endswith("\\"):
            out.append((first, " ".join(pending)))
            pending = []
    return out


class Ran:
    """``{command: {option: [where, ...]}}`` of everything the tests run or the results files / recipes show."""

    def __init__(self) -> None:
        self.options: dict[Key, dict[str, list[str]]] = {}

    def add(self, words: list[str], flags: list[str], where: str) -> None:
        key, parser = command_of(words)
        seen = self.options.setdefault(key, {})
        for flag in flags:
            seen.setdefault(canonical(parser, flag), []).append(where)

    def add_text(self, text: str, where: str) -> None:
        """The ``stainshift`` commands of shell text (a results file's block or code span, a docstring)."""
        for _, line in logical_lines(text):
            with contextlib.suppress(ValueError):  # unbalanced quotes: prose, not a command
                for args in commands_in(line):
                    self.add_args(args, where)

    def add_args(self, args: list[str], where: str) -> None:
        for variant in variants(args):
            self.add(variant, [a for a in variant if _is_flag(a)], where)


def _program(node: ast.AST) -> str | None:
    """The Python source of a string or f-string that calls the CLI (``python -c`` code), f-string values as ``_``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "_" for v in node.values)
    else:
        return None
    return text if "main(" in text else None


def _parametrized(function: ast.AST) -> dict[str, list[ast.expr]]:
    """``@pytest.mark.parametrize("argv, message", [([...], "..."), ...])``: each name's values."""
    names: dict[str, list[ast.expr]] = {}
    for deco in getattr(function, "decorator_list", []):
        if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "parametrize"
                and len(deco.args) >= 2 and isinstance(deco.args[1], ast.List | ast.Tuple)):
            continue
        spec = deco.args[0]
        if isinstance(spec, ast.Constant) and isinstance(spec.value, str):
            argnames = [n.strip() for n in spec.value.split(",")]
        elif isinstance(spec, ast.List | ast.Tuple):
            argnames = [e.value for e in spec.elts if isinstance(e, ast.Constant)]
        else:
            continue
        for value in deco.args[1].elts:
            row = value.elts if len(argnames) > 1 and isinstance(value, ast.List | ast.Tuple) else [value]
            for name, item in zip(argnames, row, strict=False):
                names.setdefault(name, []).append(item)
    return names


def _bindings(scope: ast.AST, module: bool) -> dict[str, list[ast.expr]]:
    """What each name of a scope may hold: assigned values, items of a ``for`` over a literal, parametrize values."""
    names = {} if module else _parametrized(scope)
    for node in scope.body if module else ast.walk(scope):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            names.setdefault(node.targets[0].id, []).append(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names.setdefault(node.target.id, []).append(node.value)
        elif (isinstance(node, ast.For) and isinstance(node.target, ast.Name)
              and isinstance(node.iter, ast.List | ast.Tuple)):
            names.setdefault(node.target.id, []).extend(node.iter.elts)
    return names


class _Source:
    """The command invocations of one Python module."""

    def __init__(self, tree: ast.Module, where: str, ran: Ran) -> None:
        self.where, self.ran = where, ran
        self.parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        self.names = {id(tree): _bindings(tree, module=True)}
        self.names.update({id(node): _bindings(node, module=False) for node in ast.walk(tree)
                           if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)})
        self.wrappers: dict[str, Key] = {}
        self.programs: list[ast.Module] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.List | ast.Tuple):
                parent = self.parents.get(node)
                self._sequence(node.elts, node, sole=isinstance(parent, ast.Call) and parent.args == [node])
            elif isinstance(node, ast.Call):
                self._sequence(node.args, node, sole=False)
            program = _program(node)
            if program:
                with contextlib.suppress(SyntaxError):
                    self.programs.append(ast.parse(program))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in self.wrappers:
                flags = [s for arg in [*node.args, *node.keywords] for s in self._strings(arg) if _is_flag(s)]
                self.ran.add(list(self.wrappers[node.func.id]), flags, f"{where}:{node.lineno}")

    def _scopes(self, node: ast.AST) -> list[ast.AST]:
        """The functions around ``node``, innermost first, then the module."""
        out = []
        while node in self.parents:
            node = self.parents[node]
            if id(node) in self.names:
                out.append(node)
        return out

    def _resolve(self, name: str, at: ast.AST) -> list[ast.expr]:
        for scope in self._scopes(at):
            if name in self.names[id(scope)]:
                return self.names[id(scope)][name]
        return []

    def _strings(self, node: ast.AST) -> list[str]:
        """Every string literal inside ``node``, and inside what the names in it hold."""
        values = [node] + [v for sub in ast.walk(node) if isinstance(sub, ast.Name) for v in self._resolve(sub.id, sub)]
        return [s.value for value in values for s in ast.walk(value)
                if isinstance(s, ast.Constant) and isinstance(s.value, str)]

    def _expand(self, elts: list[ast.expr], at: ast.AST, depth: int = 0) -> list[list[object]]:
        """The possible item lists: a ``str`` per literal, the node for anything else, ``*name`` resolved."""
        out: list[list[object]] = [[]]
        for elt in elts:
            choices: list[list[object]] = [[elt]]
            if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                choices = [[elt.value]]
            elif isinstance(elt, ast.Starred) and depth < 3:
                values = [elt.value]
                if isinstance(elt.value, ast.Name):
                    values = self._resolve(elt.value.id, at) or [elt]  # a parameter: stays ``*name``
                choices = []
                for value in values:
                    if isinstance(value, ast.List | ast.Tuple):
                        choices += self._expand(value.elts, at, depth + 1)
                    else:
                        choices.append([value])
            out = [[*a, *b] for a in out for b in choices][:256]
        return out

    def _sequence(self, elts: list[ast.expr], at: ast.AST, sole: bool) -> None:
        for items in self._expand(elts, at):
            for i, item in enumerate(items):
                after_name = i > 0 and _is_stainshift(items[i - 1])  # [python, "-m", "stainshift", ...]
                leading = item in TOP and (i == 0 or not isinstance(items[i - 1], str))  # run(capsys, "demo", ...)
                if isinstance(item, str) and (after_name or leading):
                    break
            else:
                continue
            rest = items[i:]
            words = list(itertools.takewhile(lambda w: isinstance(w, str) and not w.startswith("-"), rest))
            key, _ = command_of(words)
            flags = [w for w in rest if _is_flag(w)]
            flags += [s for w in rest if isinstance(w, ast.AST) for s in self._strings(w) if _is_flag(s)]
            if not (after_name or len(key) > 1 or flags or sole):  # Path(tmp, "train"), ["train", "val", "test"]
                continue
            self.ran.add(list(key), flags, f"{self.where}:{getattr(at, 'lineno', 0)}")
            if any(isinstance(w, ast.Starred) and isinstance(w.value, ast.Name) for w in rest):
                function = next((s for s in self._scopes(at) if isinstance(s, ast.FunctionDef)), None)
                if function is not None:  # def _run(root, *args): main(["pipeline", "run", ..., *args])
                    self.wrappers[function.name] = key


def _results(ran: Ran) -> set[str]:
    """The commands the results files show, into ``ran``; the names of the benchmark scripts they name."""
    scripts: set[str] = set()
    for path in sorted(RESULTS.glob("*.md")):
        text, where = path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        blocks, prose = split_page(text)
        for _, lang, body in blocks:
            if lang in SHELL_FENCES - {""}:  # a bare ``` block in a results file is a command's output
                ran.add_text(body, where)
        for span in inline_commands(prose):
            ran.add_text(span, where)
        scripts |= set(re.findall(r"\b(\w+)\.py\b", text))
    for path in sorted(RESULTS.rglob("*.json")):
        text, where = path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix()
        pending = [json.loads(text)]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                if isinstance(item.get("command"), str):
                    ran.add_text(item["command"], where)
                    scripts |= set(re.findall(r"\b(\w+)\.py\b", item["command"]))
                pending += item.values()
            elif isinstance(item, list):
                pending += item
    return scripts


@functools.cache
def ran() -> Ran:
    """What the tests and benchmarks run, the results files show and the pipeline recipes run."""
    out = Ran()
    scripts = _results(out)
    for path in sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        if path.name == Path(__file__).name:
            continue
        where = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.parent.name == "benchmarks" and path.stem in scripts:  # "command: see the script's docstring"
            out.add_text(ast.get_docstring(tree) or "", f"{where} (docstring)")
        pending = [tree]
        while pending:
            pending += _Source(pending.pop(), where, out).programs
    for path in sorted((ROOT / "pipelines").glob("*.toml")):
        for step in tomllib.loads(path.read_text(encoding="utf-8")).get("steps", []):
            out.add_args(shlex.split(step["run"]), path.relative_to(ROOT).as_posix())
    return out


def doc_commands(page: Path) -> list[tuple[int, list[str]]]:
    """``(line number, arguments)`` of every ``stainshift`` command in the page's shell blocks."""
    blocks, _ = split_page(page.read_text(encoding="utf-8"))
    return [(start + offset, args) for start, lang, body in blocks if lang in SHELL_FENCES
            for offset, line in logical_lines(body) for args in commands_in(line)]


def unrun(args: list[str]) -> tuple[Key, list[str]] | None:
    """None when a test runs the command with each of its options (or a results file / recipe shows them), else the
    command and the options no test, results file or recipe uses with it (all of them when the command is unrun)."""
    options = ran().options
    command, parser = command_of(variants(args)[0])
    flags = sorted({canonical(parser, a) for variant in variants(args) for a in variant if _is_flag(a)})
    if command not in options:
        return command, flags
    missing = [f for f in flags if f not in options[command] and (command, f) not in NOT_RUN]
    return (command, missing) if missing else None


# -- the site -------------------------------------------------------------------------------------------------------


def test_mkdocs_builds_strict_and_offline(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]' installs it)")
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (site / "index.html").is_file()
    assert (site / "benchmarks" / "results" / "demo_before_after.png").is_file()  # docs/hooks.py copied it
    assert (site / "benchmarks" / "results" / "cross_site.html").is_file()  # and rendered the report
    # nothing the pages load comes from the network: no remote src / href / @import / url() in any built file
    remote = re.compile(r"""(?:\bsrc=|<link[^>]*\bhref=|@import\s+|url\()\s*["']?(?:https?:)?//""", re.I)
    loads = [p.relative_to(site) for p in site.rglob("*") if p.suffix in (".html", ".css", ".js")
             and remote.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert not loads, f"the site must work offline; these load from the network: {loads}"


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if not re.search(rf":\s*{re.escape(p.name)}\s*$", nav, re.M)]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


# -- commands -------------------------------------------------------------------------------------------------------


def test_the_checks_catch_a_renamed_flag():
    assert parse_error(["harmonize", "--src", "a", "--dst", "b", "--method", "reinhard"]) is None
    assert parse_error(["harmonize", "--src", "a", "--dst", "b", "--no-such-flag"]) is not None
    assert parse_error(["harmonize", "--src", "a", "--dst", "b", "--til", "256"]) is not None  # no abbreviations
    assert commands_in("stainshift demo --quick   # a comment's apostrophe\n") == [["demo", "--quick"]]
    assert commands_in("torchrun --nproc_per_node 2 -m stainshift train cyclegan \\\n  --dst b") == [
        ["train", "cyclegan", "--dst", "b"]]
    assert variants(["select", "[--rule", "labelled|label-free]"]) == [
        ["select", "--rule", "labelled"], ["select", "--rule", "label-free"]]


def test_the_docs_show_commands():
    blocks = [b for page in PAGES for b in split_page(page.read_text(encoding="utf-8"))[0]]
    commands = [c for _, lang, body in blocks if lang in SHELL_FENCES for c in commands_in(body)]
    assert len(commands) > 100
    readme = split_page((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    assert readme[0][2].startswith("bash setup.sh && .venv/bin/stainshift demo"), "the README opens with CI's commands"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_command_parses(page):
    blocks, _ = split_page(page.read_text(encoding="utf-8"))
    bad = []
    for start, lang, body in blocks:
        if lang not in SHELL_FENCES:
            continue
        for args in commands_in(body):
            for variant in variants(args):
                error = parse_error(variant)
                if error:
                    bad.append(f"{page.name}:{start}: stainshift {' '.join(variant)}\n    -> {error}")
    assert not bad, "commands the parser refuses:\n" + "\n".join(bad)


def test_the_checks_see_what_the_tests_run():
    source = '''
ARGS = ["--preset", "tiny"]
def _run(root, *args):
    return main(["pipeline", "run", str(root), "--quiet", *args])
@pytest.mark.parametrize("argv, message", [(["select", "--src", "a"], "m")])
def test_x(argv, message, tmp_path):
    main([*argv, "--rule", f"{tmp_path}"])
    for each in (["domains", "add"], ["models", "list"]):
        main([*each, "--help"])
    subprocess.run([sys.executable, "-m", "stainshift", "train", "cut", *ARGS, "--out", str(tmp_path)])
    _run(tmp_path, "--set", "a=b")
    run = subprocess.run([sys.executable, "-c", "main(['harmonize', '--tile', '8'])\\n"])
    Path(tmp_path, "demo"), ["train", "val", "test"]
'''
    found, pending = Ran(), [ast.parse(source)]
    while pending:
        pending += _Source(pending.pop(), "t.py", found).programs
    assert {k: sorted(v) for k, v in found.options.items()} == {
        ("select",): ["--rule", "--src"], ("domains", "add"): ["--help"], ("models", "list"): ["--help"],
        ("train",): ["--out", "--preset"], ("pipeline", "run"): ["--quiet", "--set"], ("harmonize",): ["--tile"]}
    # and on the real files: a subprocess, a wrapper, a -c program, a parametrize list, a results file, a recipe
    options = ran().options
    assert any(w.startswith("tests/test_cli.py") for w in options[()]["--version"])  # python -m stainshift
    assert any(w.startswith("tests/test_pipeline.py") for w in options[("pipeline", "run")]["--set"])
    assert options[("classify", "train")]["--quiet"] and options[("harmonize",)]["--overlap"]
    assert "benchmarks/results/real_select_fid_jtsc_pbc.md" in options[("select",)]["--fid-model"]
    assert "pipelines/paper_blocks_1_2.toml" in options[("benchmark",)]["--selection-seed"]
    assert unrun(["harmonize", "--src", "a", "--dst", "b", "--method", "reinhard"]) is None
    assert unrun(["harmonize", "--src", "a", "--no-such-flag"]) == (("harmonize",), ["--no-such-flag"])


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_command_is_one_a_test_runs_or_a_results_file_shows(page):
    bad = []
    for line, args in doc_commands(page):
        problem = unrun(args)
        if problem is None:
            continue
        command, missing = problem
        name = " ".join(["stainshift", *command])
        if command not in ran().options:
            why = f"no test runs '{name}', and no results file or recipe shows it"
        else:
            why = f"no test, results file or recipe passes {', '.join(missing)} to '{name}'"
        bad.append(f"{page.relative_to(ROOT).as_posix()}:{line}: stainshift {' '.join(args)}\n    -> {why}")
    if bad:
        pytest.fail("doc commands that no test runs and no results file or recipe shows (run them in a test, or show "
                    "a combination one runs):\n" + "\n".join(bad), pytrace=False)


def test_each_allowance_is_still_needed():
    shown = set()
    for page in PAGES:
        for _, args in doc_commands(page):
            command, parser = command_of(variants(args)[0])
            shown |= {(command, canonical(parser, a)) for a in args if _is_flag(a)}
    stale = [f"{' '.join(k)} {flag}: now used at {ran().options[k][flag][0]}" for k, flag in NOT_RUN
             if flag in ran().options.get(k, {})]
    stale += [f"{' '.join(k)} {flag}: no doc command shows it" for k, flag in NOT_RUN if (k, flag) not in shown]
    assert not stale, "remove these NOT_RUN entries:\n" + "\n".join(stale)


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_inline_option_exists(page):
    _, prose = split_page(page.read_text(encoding="utf-8"))
    bad = []
    for span in inline_commands(prose):
        words = shlex.split(span.replace("'", ""), comments=True)[1:]
        parser, rest = leaf([w.strip("[]") for w in words])
        known = options_of(parser) | options_of(PARSER)
        for word in rest:
            for alt in word.strip("[]").split("|"):
                if alt.startswith("--") and alt.split("=")[0] not in known:
                    bad.append(f"`{span}`: {alt.split('=')[0]} is not an option of '{parser.prog}'")
    assert not bad, "\n".join(bad)


def test_the_command_line_tables_name_real_options():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    bad, parser, checked = [], None, 0
    for line in text.splitlines():
        heading = re.match(r"#{2,3} `stainshift ([\w ]+)`", line)
        if heading:
            parser, rest = leaf(heading.group(1).split())
            if rest:
                bad.append(f"no command 'stainshift {heading.group(1)}'")
        elif parser is not None and line.startswith("| `"):
            for span in INLINE.findall(line.split(" | ")[0]):
                flag = span.split()[0]
                checked += 1
                if flag.startswith("-") and flag not in options_of(parser):
                    bad.append(f"{flag} is not an option of '{parser.prog}'")
    assert checked > 100
    assert not bad, "\n".join(bad)


# -- links and paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_relative_link_and_image_exists(page):
    _, prose = split_page(page.read_text(encoding="utf-8"))
    prose = INLINE.sub("", prose)
    bad = []
    for match in LINK.finditer(prose):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            bad.append(target)
    assert not bad, f"{page.name}: links to missing files: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_repository_path_named_exists(page):
    text = page.read_text(encoding="utf-8")
    bad = []
    for match in REPO_PATH.finditer(text):
        after = text[match.end():match.end() + 2]
        if after[:1] in "<*{" or after == ".*":  # a pattern such as results/label_curve_<site>.png
            continue
        if not (ROOT / match.group(1)).exists():
            bad.append(match.group(1))
    assert not bad, f"{page.name}: repository paths that do not exist: {sorted(set(bad))}"
