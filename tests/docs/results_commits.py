#!/usr/bin/env python3
"""Every result file under docs/experiments/ names the commit that produced
it, and that commit is at or after the last change to core/phase/ (the
controller the experiments measure), unless docs/EXPERIMENTS.md says plainly
that the file is stale (a line with "Stale" and the file's path under
docs/experiments/).

Result files: *.json (a top-level "commit" string) and *.md / *.txt (a
"Commit <hash>" within the first three lines); images are drawn from the
JSON beside them. A commit ending in -dirty / +dirty (uncommitted changes)
fails: such a result cannot be traced to code.

Usage: results_commits.py SOURCE_DIR. Exit 77 (ctest: skipped) outside a
git checkout with history.
"""
import json
import os
import re
import subprocess
import sys

SKIP = 77


def git(src, *args):
    return subprocess.run(["git", "-C", src, *args], capture_output=True, text=True)


def named_commit(path):
    if path.endswith(".json"):
        with open(path) as f:
            c = json.load(f).get("commit")
        return c if isinstance(c, str) else None
    with open(path) as f:
        head = "".join(f.readline() for _ in range(3))
    m = re.search(r"\b[Cc]ommit ([0-9a-f]{7,40}(?:[-+]dirty)?)\b", head)
    return m.group(1) if m else None


def main():
    src = os.path.abspath(sys.argv[1])
    if git(src, "rev-parse", "--git-dir").returncode != 0:
        print("not a git checkout: skipped")
        return SKIP
    if git(src, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        print("a shallow clone cannot trace result commits: skipped")
        return SKIP
    last = git(src, "log", "-1", "--format=%H", "--", "core/phase").stdout.strip()
    if not last:
        print("no history of core/phase (shallow clone?): skipped")
        return SKIP
    with open(os.path.join(src, "docs", "EXPERIMENTS.md")) as f:
        stale_lines = [l for l in f if "Stale" in l]
    root = os.path.join(src, "docs", "experiments")
    failures, checked = [], 0
    for d, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith((".json", ".md", ".txt")):
                continue
            path = os.path.join(d, name)
            rel = os.path.relpath(path, os.path.join(src, "docs"))
            checked += 1
            c = named_commit(path)
            if c is None:
                failures.append(f"{rel}: names no commit (JSON: \"commit\"; text: 'Commit <hash>' "
                                "in its first three lines)")
                continue
            if re.search(r"[-+]dirty$", c):
                failures.append(f"{rel}: made from uncommitted changes ({c})")
                continue
            if git(src, "cat-file", "-e", c + "^{commit}").returncode != 0:
                failures.append(f"{rel}: commit {c} is not in this repository's history")
                continue
            fresh = git(src, "merge-base", "--is-ancestor", last, c).returncode == 0
            if not fresh and not any(rel in l or rel.split("/", 1)[1] in l for l in stale_lines):
                failures.append(f"{rel}: made at {c}, before core/phase last changed ({last[:10]}); "
                                "regenerate it, or say in docs/EXPERIMENTS.md on a line with "
                                f"'Stale' and '{rel}' that it is stale")
    for f in failures:
        print("FAIL:", f)
    print(f"{checked} result files checked against core/phase at {last[:10]}: "
          f"{len(failures)} failing")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
