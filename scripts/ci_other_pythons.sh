#!/usr/bin/env bash
# Runs the non-browser suite on the oldest and newest supported Pythons that this machine
# already has (nothing is downloaded), each in its own venv under build/. `.ci/run` calls it
# after `make test`; by hand: `scripts/ci_other_pythons.sh [X.Y ...]` (default: 3.10 3.13).
#
# An interpreter is looked for as pythonX.Y on PATH, then in $(pyenv root)/versions/X.Y.N
# (newest patch first); a candidate counts only if it runs, reports X.Y and can make a venv
# (pyenv shims on PATH that are not enabled fail to run and are passed over).
# A version equal to the main run's interpreter (.venv) is skipped: `make test` covered it.
# A version not found is reported and does not fail; a failed install or test run does.
set -euo pipefail
cd "$(dirname "$0")/.."

# The supported range: taskflow.py says "Python 3.10 or newer"; .github/workflows/ci.yml's
# matrix ends at 3.13. Keep these in step with both.
SUPPORTED_OLDEST=3.10
SUPPORTED_NEWEST=3.13

MAIN_VENV_PYTHON=.venv/bin/python
REQUIREMENTS=requirements-dev.txt

if (($#)); then
  versions=("$@")
else
  versions=("$SUPPORTED_OLDEST" "$SUPPORTED_NEWEST")
fi

# Prints "X.Y<TAB>full version<TAB>sys.executable" for a working interpreter that can make
# venvs; prints nothing (and fails) otherwise.
probe() {
  "$1" -c 'import sys, venv, ensurepip
print("%d.%d" % sys.version_info[:2], sys.version.split()[0], sys.executable, sep="\t")' \
    2>/dev/null </dev/null
}

pyenv_root() {
  if command -v pyenv >/dev/null 2>&1; then
    pyenv root 2>/dev/null && return
  fi
  echo "${PYENV_ROOT:-$HOME/.pyenv}"
}

# Prints the probe line of the first usable Python X.Y, or nothing.
find_python() {
  local want="$1" cand line root dir
  local -a cands=()
  if cand="$(command -v "python$want" 2>/dev/null)"; then
    cands+=("$cand")
  fi
  root="$(pyenv_root)"
  if [[ -d "$root/versions" ]]; then
    while IFS= read -r dir; do
      # Plain X.Y.N only: not X.Y.Nt (free-threaded), X.Y-dev, or pyenv-virtualenv envs.
      [[ "$(basename "$dir")" =~ ^${want//./\\.}\.[0-9]+$ ]] || continue
      cands+=("$dir/bin/python$want")
    done < <(printf '%s\n' "$root"/versions/* | sort -rV)
  fi
  for cand in "${cands[@]}"; do
    [[ -x "$cand" ]] || continue
    line="$(probe "$cand")" || continue
    if [[ "${line%%$'\t'*}" == "$want" ]]; then
      echo "$line"
      return
    fi
  done
  return 0
}

main_minor=""
main_desc="none (.venv missing; nothing skipped)"
if [[ -x "$MAIN_VENV_PYTHON" ]] &&
  line="$("$MAIN_VENV_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.version.split()[0])')"; then
  read -r main_minor main_full <<<"$line"
  main_desc="Python $main_full ($MAIN_VENV_PYTHON)"
fi

req_hash="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
summary=()
failed=0
ran=0
echo "==> Other supported Pythons: looking for ${versions[*]}; main run: $main_desc"

for want in "${versions[@]}"; do
  if [[ "$want" == "$main_minor" ]]; then
    summary+=("$want: skipped, it is the main run's interpreter ($main_desc)")
    continue
  fi
  line="$(find_python "$want")"
  if [[ -z "$line" ]]; then
    summary+=("$want: not found (no working python$want on PATH or in $(pyenv_root)/versions)")
    continue
  fi
  IFS=$'\t' read -r _ full exe <<<"$line"
  venv="build/venv-$want"
  stamp="$venv/.installed"
  stamp_text="$exe $full $req_hash"
  echo "==> Python $full ($exe): non-browser suite in $venv"

  SECONDS=0
  install_note="reused"
  if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$stamp_text" ]]; then
    install_note="installed"
    rm -rf "$venv"
    if ! { "$exe" -m venv "$venv" &&
      "$venv/bin/python" -m pip install --quiet --upgrade pip &&
      "$venv/bin/python" -m pip install --quiet -r "$REQUIREMENTS"; }; then
      summary+=("$want: FAILED to install $REQUIREMENTS, Python $full ($exe) after ${SECONDS}s")
      failed=1
      continue
    fi
    echo "$stamp_text" >"$stamp"
  fi
  install_s=$SECONDS

  SECONDS=0
  ran=$((ran + 1))
  if "$venv/bin/python" -m pytest -m "not browser" -q -p no:cacheprovider; then
    result="passed"
  else
    result="FAILED"
    failed=1
  fi
  summary+=("$want: $result, Python $full ($exe); venv $install_note in ${install_s}s, tests ${SECONDS}s")
done

echo
echo "Other supported Pythons (non-browser suite); main run: $main_desc"
for entry in "${summary[@]}"; do
  echo "  $entry"
done
if ((ran == 0)); then
  echo "  No other supported Python ran here: only the main run's interpreter was tested."
fi
if ((failed)); then
  echo "A run on another Python failed." >&2
fi
exit "$failed"
