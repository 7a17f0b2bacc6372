"""One version string: the repository's VERSION file.

CMake reads it (top-level CMakeLists.txt, file(STRINGS)) and so does the
Python package's metadata (pyproject.toml: version = attr spotter.__version__).
The places that cannot read a file carry a copy, checked here as text:
  client/python/spotter/__init__.py  __version__ = "MAJOR.MINOR.PATCH"
  Dockerfile                         ARG VERSION=MAJOR.MINOR.PATCH
  client/cpp/run_session.h           client_name = "spotter-cpp/MAJOR.MINOR"
  client/python/spotter/session.py   client_name = "spotter-python/MAJOR.MINOR"
The client names (sent in Hello) carry MAJOR.MINOR only, as documented in
docs/CLIENTS.md; a patch release leaves them alone, a minor one must bump them.
Needs no build: it reads the files only."""
import ast
import os
import re

from conftest import REPO

SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def version():
    text = read("VERSION")
    assert text.endswith("\n") and text.count("\n") == 1, "VERSION: one line, newline-terminated"
    v = text.strip()
    assert SEMVER.match(v), f"VERSION {v!r} is not MAJOR.MINOR.PATCH"
    return v


def major_minor(v):
    return ".".join(v.split(".")[:2])


def test_version_file():
    version()


def test_cmake_reads_version_file():
    text = read("CMakeLists.txt")
    assert re.search(r"file\(STRINGS\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/VERSION\s+SPOTTER_VERSION\b",
                     text), "CMakeLists.txt must read VERSION into SPOTTER_VERSION"
    m = re.search(r"^project\(spotter\s+VERSION\s+(\S+)", text, re.M)
    assert m, "no project(spotter VERSION ...) in CMakeLists.txt"
    assert m.group(1) == "${SPOTTER_VERSION}", f"project() has a literal version {m.group(1)}"


def test_python_version_literal():
    tree = ast.parse(read("client", "python", "spotter", "__init__.py"))
    found = [node.value.value for node in tree.body
             if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
             and isinstance(node.value, ast.Constant)]
    assert found == [version()], f"spotter.__version__ {found} != VERSION {version()}"


def test_python_metadata_takes_version_from_package():
    text = read("client", "python", "pyproject.toml")
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the text checks below only
        tomllib = None
    if tomllib:
        data = tomllib.loads(text)
        assert "version" not in data["project"]
        assert "version" in data["project"]["dynamic"]
        assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "spotter.__version__"}
    assert re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', text, re.M)
    assert not re.search(r"\bversion\s*=", read("client", "python", "setup.py")), \
        "setup.py must not set a version (pyproject.toml has it)"


def test_dockerfile_arg():
    text = read("Dockerfile")
    args = re.findall(r"^ARG\s+VERSION=(\S+)\s*$", text, re.M)
    assert args == [version()], f"Dockerfile ARG VERSION {args} != VERSION {version()}"
    # The build stage runs CMake, which reads VERSION: it must be copied in.
    assert re.search(r"^COPY\s+(?:\S+\s+)*VERSION\s+(?:\S+\s+)*\./\s*$", text, re.M), \
        "Dockerfile must COPY VERSION into the build stage"


def test_client_names():
    mm = major_minor(version())
    cpp = re.findall(r'client_name\s*=\s*"spotter-cpp/([^"]*)"',
                     read("client", "cpp", "run_session.h"))
    py = re.findall(r'client_name\s*:\s*str\s*=\s*"spotter-python/([^"]*)"',
                    read("client", "python", "spotter", "session.py"))
    assert cpp == [mm], f"run_session.h client_name spotter-cpp/{cpp} != VERSION's {mm}"
    assert py == [mm], f"session.py client_name spotter-python/{py} != VERSION's {mm}"
