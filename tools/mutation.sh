#!/usr/bin/env bash
# Mutation testing of the pure core with mutmut (slow, about 20 minutes on 2 cores;
# not part of CI). Run from the repository root: tools/mutation.sh
#
# mutmut copies the package into mutants/ and imports it from there, so the project
# must not be installed in the environment it runs in (an editable install would
# win the import): the dependencies are installed, the project itself is not.
# Needs redis-server for the store tests. Prints the score of each module at the end;
# `mutants/` holds the details (`mutmut results`, `mutmut show NAME`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet ".[tests]" "mutmut==3.8.1"
"$venv/bin/pip" uninstall --quiet --yes stability-user
rm -rf mutants
"$venv/bin/mutmut" run --max-children "${JOBS:-2}" || true
"$venv/bin/python" - <<'PY'
import collections
import json
import pathlib

for meta in sorted(pathlib.Path("mutants/stability_user").glob("*.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"].values()
    counts = collections.Counter(
        "survived" if code == 0 else "no tests" if code in (5, 33) else "killed" for code in codes
    )
    total = sum(counts.values())
    print(
        f"{meta.name[:-5]:24} {total:4} mutants  {counts['killed']:4} killed  "
        f"{counts['survived']:3} survived  score {counts['killed'] / total:.1%}"
    )
PY
