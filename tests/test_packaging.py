"""The device's dependency list has one source, pyproject.toml, for every way onto the device.

Dockerfile.arm, scripts/arm64_check.sh and the device instructions of the README and docs/ each install the
project itself with the same extra and name no dependency of their own, so they cannot drift.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE_EXTRA = "camera"
# pip options that take a value, so that value is not taken for a requirement.
PIP_OPTIONS_WITH_VALUE = {
    "--target", "-t", "--platform", "--python-version", "--implementation", "--abi", "--cache-dir",
    "--constraint", "-c", "--python", "--prefix", "--root", "--index-url", "-i", "--extra-index-url",
    "--find-links", "-f", "--requirement", "-r",
}


def pip_installs(text: str) -> list[list[str]]:
    """The requirement arguments of every `pip install` command in shell or Dockerfile text."""
    logical = re.sub(r"\\\n", " ", text)
    installs = []
    for line in logical.splitlines():
        if not re.search(r"\bpip\b.*\binstall\b", line) or line.lstrip().startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands, words = [], []
        for token in lexer:
            if set(token) <= set("&|;()<>"):  # an operator or redirection ends the command's words
                if token.startswith((">", "<")) and words and words[-1].isdigit():
                    words.pop()  # the file descriptor of a redirection such as 2>&1
                commands.append(words)
                words = []
            else:
                words.append(token)
        commands.append(words)
        for words in commands:
            if "install" not in words or not any(Path(word).name == "pip" for word in words[: words.index("install")]):
                continue
            arguments, skip_value = [], False
            for word in words[words.index("install") + 1:]:
                if skip_value:
                    skip_value = False
                elif word in PIP_OPTIONS_WITH_VALUE:
                    skip_value = True
                elif not word.startswith("-") and not re.fullmatch(r"\$\{\w+\[@\]\}", word):  # arrays hold options
                    arguments.append(word)
            installs.append(arguments)
    return installs


def test_pyproject_device_install_has_no_tensorflow_and_no_mkdocs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    device = project["dependencies"] + project["optional-dependencies"][DEVICE_EXTRA]
    assert not [requirement for requirement in device if re.search("tensorflow|mkdocs", requirement.lower())]
    assert [requirement for requirement in project["optional-dependencies"]["docs"] if "mkdocs" in requirement]


def test_dockerfile_installs_only_the_project_with_the_device_extra():
    installs = pip_installs((REPO / "Dockerfile.arm").read_text())
    assert installs == [[f".[{DEVICE_EXTRA}]"]]


def test_arm64_check_installs_only_the_project_wheel_with_the_device_extra():
    script = (REPO / "scripts" / "arm64_check.sh").read_text()
    assert re.search(rf"^DEVICE_EXTRA={DEVICE_EXTRA}$", script, re.MULTILINE)
    installs = pip_installs(script)
    # The dependencies with the extra (cached), then the project itself without them (each run).
    assert installs == [["$WHEEL[$DEVICE_EXTRA]"], ["$WHEEL"]]
    # $WHEEL is the wheel pip builds from this repository's working tree, nothing else.
    assert re.search(r'pip wheel [^\n]*--no-deps --wheel-dir "\$WORK/dist" "\$WORK/src"', script)
    assert re.search(r'^WHEEL=\$\(ls "\$WORK"/dist/\*\.whl\)$', script, re.MULTILINE)


def test_readme_and_docs_install_only_the_project_and_the_pi_gets_the_device_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    requirements = [(page.name, requirement) for page in pages
                    for arguments in pip_installs(page.read_text().replace("`", " ")) for requirement in arguments]
    # Only the project itself, with its extras: never a dependency named on its own.
    for page, requirement in requirements:
        match = re.fullmatch(r"(retrain-edge|\.|\S*retrain_edge\S*\.whl\)?)(?:\[([\w,]+)\])?", requirement)
        assert match, f"{page} installs {requirement!r}, not the project"
        assert set(filter(None, (match.group(2) or "").split(","))) <= set(project["optional-dependencies"])
    assert ("README.md", f"retrain-edge[{DEVICE_EXTRA}]") in requirements
