"""README.md and docs/ stay true to the tree: links resolve, commands name real things.

- every relative link (``[text](path#anchor)``) names a file that exists and, for a Markdown
  file, a heading it has (GitHub's anchor rules);
- every ``make TARGET`` in a shell block or inline code is a target of the Makefile;
- every ``camflow SUBCOMMAND --flag ...`` in a shell block or inline code names a subcommand the
  command line has and flags that subcommand accepts, and every flag in the first column of a
  flag table is one some subcommand accepts.

The command line is read from the installed ``camflow`` console script (whatever module it
lives in): its parser is caught as ``main`` parses ``--help``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_CAMFLOW = re.compile(r"(?:^|(?<=[\s\"'(`]))(?:\.venv/bin/)?camflow\s+([a-z]+)((?:[^|;&)#\n])*)")
_MAKE = re.compile(r"(?:^|(?<=[\s\"'(`]))make\s+([a-z][\w-]*)(?![\w=-])")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """The page without its fenced blocks (headings and links there are not the page's)."""
    return _FENCE.sub("", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for match in _HEADING.finditer(_prose(_text(page))):
        base = _anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def _code(text: str) -> Iterator[str]:
    """Shell blocks (line by line, continuations joined) and inline code spans."""
    for match in _FENCE.finditer(text):
        if match.group(1) in ("sh", "bash", "console", "shell"):
            yield from match.group(2).replace("\\\n", " ").splitlines()
    yield from _INLINE.findall(_prose(text))


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser caught")
        self.parser = parser


def _command_line() -> dict[str, set[str]]:
    """Subcommand -> the option strings it accepts, from the installed ``camflow`` script."""
    (script,) = entry_points(group="console_scripts", name="camflow")
    main = script.load()

    def catch(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        raise _Caught(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Caught) as caught:
            main(["--help"])
    parser = caught.value.parser
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: _options(p) for name, p in sub.choices.items()}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and of its own subcommands (``camflow device add``)."""
    found = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found |= _options(child)
    return found


@pytest.fixture(scope="module")
def command_line() -> dict[str, set[str]]:
    return _command_line()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(_text(page))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_pages_are_linked_from_the_readme() -> None:
    readme = _text(ROOT / "README.md")
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages the README does not point to: {unlinked}"


def test_readme_stays_short() -> None:
    assert len(_text(ROOT / "README.md").splitlines()) < 300


def test_make_targets_exist() -> None:
    makefile = _text(ROOT / "Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", makefile, re.M))
    unknown = sorted(
        {
            f"{page.relative_to(ROOT)}: make {name}"
            for page in PAGES
            for code in _code(_text(page))
            for name in _MAKE.findall(code)
            if name not in targets
        }
    )
    assert not unknown, f"make targets the Makefile lacks: {unknown}"


def test_camflow_commands_exist(command_line: dict[str, set[str]]) -> None:
    wrong = []
    for page in PAGES:
        for code in _code(_text(page)):
            for sub, rest in _CAMFLOW.findall(code):
                where = f"{page.relative_to(ROOT)}: camflow {sub}{rest}".strip()
                if sub not in command_line:
                    wrong.append(f"{where}: no subcommand {sub!r}")
                    continue
                missing = [flag for flag in _FLAG.findall(rest) if flag not in command_line[sub]]
                if missing:
                    wrong.append(f"{where}: {sub} has no {missing}")
    assert not wrong, "\n".join(wrong)


def test_flag_tables_name_real_flags(command_line: dict[str, set[str]]) -> None:
    known = set().union(*command_line.values())
    wrong = []
    for page in PAGES:
        for line in _prose(_text(page)).splitlines():
            cells = line.split("|")
            if len(cells) > 2 and cells[0] == "" and cells[1].strip().startswith("`--"):
                wrong += [f"{page.relative_to(ROOT)}: {f}" for f in _FLAG.findall(cells[1]) if f not in known]
    assert not wrong, f"flags no camflow subcommand accepts: {wrong}"


def test_every_flag_is_documented(command_line: dict[str, set[str]]) -> None:
    """The command reference (with the tail and loadgen tables it points to) misses no flag."""
    documented = set()
    for page in PAGES:
        documented |= set(_FLAG.findall(_text(page)))
    every = set().union(*command_line.values()) - {"--help"}
    missing = sorted(f for f in every if f.startswith("--") and f not in documented)
    assert not missing, f"flags no page documents: {missing}"
