"""The docs name no `retrain-edge` or `edge-classify` flag that the command does not have.

Which flags are checked: those of an invocation, in README.md and docs/*.md. An invocation is a
command (a line of a fenced code block, its `\\` continuation lines joined, or an inline code span,
cut at `&&`, `||`, `;`, `|` and at a ` #` comment) whose first word, after any prompt such as
`$ ` or `pi$ ` and any `sudo`, is `retrain-edge` or `edge-classify` (or a path ending in one).
For `retrain-edge`, the first word after it that is not a flag is the sub-command, which must
exist too. Each `--flag` of the invocation must appear in the installed command's own `--help`
(of that sub-command); `retrain-edge bottlenecks` also passes Apache Beam's pipeline options on,
so there a flag may be one of those. Commands of other tools (pip, make, docker, systemctl,
python scripts) and flags named in prose are not checked: they are not ours to check.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOOLS = ("retrain-edge", "edge-classify")
BEAM_SUB_COMMAND = "bottlenecks"  # passes the options it does not know on to Beam
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
PROMPT = re.compile(r"^(?:[\w.@-]*\$\s+)?(?:sudo\s+)?")
WIDE_HELP = {"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"}  # no option name cut short with an ellipsis


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def commands(markdown: str) -> list[str]:
    """Every command-like text: fenced code lines (continuations joined) and inline code spans."""
    texts, fenced, prose = [], [], []
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif in_fence:
            fenced.append(line)
        else:
            prose.append(line)
    texts += re.sub(r"\\\n", " ", "\n".join(fenced)).splitlines()
    texts += re.findall(r"`([^`]+)`", re.sub(r"\n", " ", "\n".join(prose)))
    return [command for text in texts for command in re.split(r"&&|\|\||;|\|", re.sub(r"\s#.*", "", text))]


def invocations(markdown: str) -> list[tuple[str, str | None, list[str]]]:
    """(tool, sub-command or None, flags) for every invocation of our commands in the text."""
    found = []
    for command in commands(markdown):
        words = PROMPT.sub("", command.strip()).split()
        if not words or Path(words[0]).name not in TOOLS:
            continue
        tool = Path(words[0]).name
        sub_command = None
        if tool == "retrain-edge":
            sub_command = next((word for word in words[1:] if not word.startswith(("-", "["))), None)
        found.append((tool, sub_command, FLAG.findall(command)))
    return found


@functools.cache
def help_flags(tool: str, sub_command: str | None) -> frozenset[str] | None:
    """The flags the installed command's --help names; None when the sub-command does not exist."""
    completed = subprocess.run([str(BIN / tool), *([sub_command] if sub_command else []), "--help"],
                               capture_output=True, text=True, env={**os.environ, **WIDE_HELP}, timeout=60)
    return frozenset(FLAG.findall(completed.stdout)) if completed.returncode == 0 else None


@functools.cache
def beam_flags() -> frozenset[str]:
    """Apache Beam's pipeline options, from the parser Beam itself builds of them."""
    from apache_beam.options.pipeline_options import PipelineOptions

    flags = set()
    PipelineOptions([]).get_all_options(
        add_extra_args_fn=lambda parser: flags.update(name for action in parser._actions for name in action.option_strings))
    return frozenset(flags)


def unknown_flags(markdown: str) -> list[str]:
    """'tool sub-command --flag' for every flag (or sub-command) the commands do not have."""
    unknown = []
    for tool, sub_command, flags in invocations(markdown):
        known = help_flags(tool, sub_command)
        name = f"{tool} {sub_command}" if sub_command else tool
        if known is None:
            unknown.append(f"{name} (no such command)")
            continue
        if sub_command == BEAM_SUB_COMMAND:
            known |= beam_flags()
        unknown += [f"{name} {flag}" for flag in flags if flag not in known]
    return unknown


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: str(path.relative_to(REPO)))
def test_docs_name_only_flags_the_commands_have(path):
    assert unknown_flags(path.read_text(encoding="utf-8")) == []


def test_the_docs_invoke_both_commands_and_every_sub_command():
    """So the test above has something to check: the docs show each command at work."""
    invoked = {(tool, sub_command) for path in doc_files() for tool, sub_command, _ in invocations(path.read_text())}
    assert {("edge-classify", None), *(("retrain-edge", name) for name in
            ("train", "evaluate", "audit", "convert", "bottlenecks"))} <= invoked


def test_a_made_up_flag_or_sub_command_is_caught_and_other_tools_flags_are_not_checked():
    markdown = """
Run `retrain-edge convert --quantise` (a typo), then `edge-classify --camera 0 --fps 30`.

```
pi$ edge-classify --camera 0 --json && sudo systemctl enable --now edge-classify
$ retrain-edge bottlenecks --image_dir gs://B/photos \\
    --runner DataflowRunner --project P --temp_location gs://B/tmp --num_gpus 2
retrain-edge retrain --image_dir photos     # no such sub-command
pip install --no-deps 'retrain-edge[camera]'
docker run --restart unless-stopped retrain-edge-arm --model /models/model.tflite
python scripts/bench_distortions.py --per_step_steps 40 --repeats 7
make arm64-check ARM64_CHECK_ARGS="--model DIR"
```
"""
    assert unknown_flags(markdown) == [
        "retrain-edge bottlenecks --num_gpus", "retrain-edge retrain (no such command)",
        "retrain-edge convert --quantise", "edge-classify --fps"]
