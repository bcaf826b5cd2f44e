#!/usr/bin/env bash
# Does every pinned dependency in pyproject.toml (the [project] dependencies and every extra)
# install on each Python version we claim, from a wheel? For each version and each dependency,
# `pip download --no-deps --only-binary=:all:` for CPython on manylinux x86_64 (glibc 2.28, what
# the cluster's nodes run): a binary wheel for that CPython (or abi3), or a pure-Python wheel whose
# Requires-Python admits the version. Prints one line per dependency and version with the wheel
# found, and exits 1 if any has none.
#
#   scripts/check-python-versions.sh                 # the versions in pyproject.toml's classifiers
#   scripts/check-python-versions.sh 3.14            # probe a version before claiming it
#   scripts/check-python-versions.sh --deps 3.13     # also resolve the whole dependency tree, wheels only
#
# Needs PyPI (downloads go to a temporary folder, removed at the end; pip's cache is reused).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

transitive=0
versions=()
for arg in "$@"; do
  case "$arg" in
    --deps) transitive=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    3.*) versions+=("$arg") ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# The pinned requirements, one a line, and the classifier versions.
mapfile -t reqs < <("$PY" -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project.get("dependencies", []))
for extra in project.get("optional-dependencies", {}).values():
    reqs += [r for r in extra if r not in reqs]
print("\n".join(reqs))
')
if [ ${#versions[@]} -eq 0 ]; then
  mapfile -t versions < <("$PY" -c '
import tomllib
prefix = "Programming Language :: Python :: "
for c in tomllib.load(open("pyproject.toml", "rb"))["project"].get("classifiers", []):
    v = c[len(prefix):] if c.startswith(prefix) else ""
    if v.count(".") == 1 and v.replace(".", "").isdigit():
        print(v)
')
fi
[ ${#versions[@]} -gt 0 ] || { echo "no Python versions to check" >&2; exit 2; }

# pip matches platform tags exactly: list every manylinux tag a glibc 2.28 x86_64 machine accepts.
platforms=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for minor in $(seq 5 28); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
missing=0
for version in "${versions[@]}"; do
  abi="cp${version/./}"
  target=(--python-version "$version" --implementation cp --abi "$abi" "${platforms[@]}")
  echo "== CPython $version ($abi, manylinux x86_64)"
  for req in "${reqs[@]}"; do
    dir="$tmp/$abi/$(echo "$req" | tr -c 'A-Za-z0-9._-' _)"
    mkdir -p "$dir"
    if "$PY" -m pip download -q --no-deps --only-binary=:all: "${target[@]}" -d "$dir" "$req" >"$dir.log" 2>&1; then
      printf '  ok       %-32s %s\n' "$req" "$(ls "$dir")"
    else
      printf '  MISSING  %-32s no wheel for %s\n' "$req" "$abi"
      sed 's/^/             /' "$dir.log" | grep -i error | head -3 || true
      missing=$((missing + 1))
    fi
    rm -rf "$dir"
  done
  if [ "$transitive" = 1 ]; then
    echo "  -- the whole dependency tree, wheels only"
    if "$PY" -m pip download -q --only-binary=:all: "${target[@]}" -d "$tmp/$abi-tree" "${reqs[@]}" >"$tmp/$abi-tree.log" 2>&1; then
      echo "  ok       $(ls "$tmp/$abi-tree" | wc -l) distributions resolve"
    else
      echo "  FAILED   the dependency tree does not resolve from wheels:"
      grep -i error "$tmp/$abi-tree.log" | head -5 | sed 's/^/             /'
      missing=$((missing + 1))
    fi
    rm -rf "$tmp/$abi-tree"
  fi
done
if [ "$missing" -gt 0 ]; then
  echo "$missing missing: narrow requires-python and the classifiers, or move the pin" >&2
  exit 1
fi
echo "every pinned dependency has a wheel for CPython ${versions[*]}"
