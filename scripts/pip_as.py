"""Run pip as it would run on another platform and Python: its wheels and its environment markers.

    python scripts/pip_as.py linux-aarch64 3.11 install --dry-run --ignore-installed '.[train]'

pip's --platform and --python-version choose wheels, but pip evaluates environment markers
(`sys_platform == 'darwin'`, `python_version < '3.14'`) against the Python running it, not the
target (pypa/pip#11664): on this x86_64 Linux host the `train` extra would ask for tensorflow-cpu
for every platform. So this script replaces pip's marker environment with the target's, then hands
its arguments to pip's own command line with the target's wheel tags. Only the resolver's inputs
change; the resolver is pip's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A platform people install on: its marker values and the wheel tags pip may take there."""

    name: str
    sys_platform: str
    platform_system: str
    platform_machine: str
    os_name: str
    wheel_platforms: tuple[str, ...]


def _manylinux(machine: str, newest_glibc_minor: int) -> tuple[str, ...]:
    # pip takes each --platform literally: every manylinux tag a glibc that new accepts.
    return tuple(f"manylinux_2_{minor}_{machine}" for minor in range(newest_glibc_minor, 16, -1)) + (
        f"manylinux2014_{machine}", f"linux_{machine}")


def _macos(machine: str, newest_major: int) -> tuple[str, ...]:
    # As pip on that Mac: each release back to 10.9, for the machine and for universal2 wheels.
    releases = [f"{major}_0" for major in range(newest_major, 10, -1)] + [f"10_{minor}" for minor in range(15, 8, -1)]
    return tuple(f"macosx_{release}_{arch}" for release in releases for arch in (machine, "universal2"))


# glibc 2.36 is Debian 12 (Raspberry Pi OS bookworm), the oldest base the docs name; macOS 14.
TARGETS = {target.name: target for target in (
    Target("linux-x86_64", "linux", "Linux", "x86_64", "posix", _manylinux("x86_64", 36)),
    Target("linux-aarch64", "linux", "Linux", "aarch64", "posix", _manylinux("aarch64", 36)),
    Target("linux-armv7l", "linux", "Linux", "armv7l", "posix", _manylinux("armv7l", 36)),
    Target("macos-arm64", "darwin", "Darwin", "arm64", "posix", _macos("arm64", 14)),
    Target("macos-x86_64", "darwin", "Darwin", "x86_64", "posix", _macos("x86_64", 14)),
    Target("windows-x86_64", "win32", "Windows", "AMD64", "nt", ("win_amd64",)),
)}


def marker_environment(target: Target, python: str) -> dict[str, str]:
    """PEP 508 marker values on `target` under CPython `python` ("3.11")."""
    return {
        "sys_platform": target.sys_platform, "platform_system": target.platform_system,
        "platform_machine": target.platform_machine, "os_name": target.os_name,
        "python_version": python, "python_full_version": f"{python}.0",
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "implementation_version": f"{python}.0",
    }


def pip_arguments(target: Target, python: str, arguments: list[str]) -> list[str]:
    """pip's own arguments with the target's wheel tags: binary wheels only, as the target's pip
    would find no compiler for what it would build."""
    command, rest = arguments[0], arguments[1:]
    tags = [word for platform in target.wheel_platforms for word in ("--platform", platform)]
    return [command, *rest, "--only-binary=:all:", "--implementation", "cp", "--python-version", python, *tags]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in TARGETS:
        print(f"usage: pip_as.py {{{','.join(TARGETS)}}} PYTHON PIP_COMMAND [PIP_ARGUMENTS...]", file=sys.stderr)
        return 2
    target, python = TARGETS[argv[0]], argv[1]
    from pip._internal.cli.main import main as pip_main
    from pip._vendor.packaging import markers

    environment = {**markers.default_environment(), **marker_environment(target, python)}
    markers.default_environment = lambda: dict(environment)
    return pip_main(pip_arguments(target, python, argv[2:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
