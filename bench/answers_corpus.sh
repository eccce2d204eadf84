#!/usr/bin/env bash
# Set up the answer-benchmark corpus: the Python 3.11 documentation from Debian's
# python3.11-doc package. Idempotent: installs the package only when it is missing,
# then prints the HTML root on stdout.
set -euo pipefail

HTML_ROOT=/usr/share/doc/python3.11/html

usage() {
  cat <<USAGE
Usage: bash bench/answers_corpus.sh [--help]

Installs the Debian package python3.11-doc (apt-get, needs root) when it is not
installed yet, checks that the HTML tree is there and that every page listed in
bench/answers_corpus.txt exists (their count and total size go to stderr), and
prints the root on stdout:
  ${HTML_ROOT}
The pages used by bench/answers.py are listed in bench/answers_corpus.txt
(relative to that root); bench/check_questions.py verifies the question set.
USAGE
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    echo "unknown argument: $1" >&2
    usage >&2
    exit 2
    ;;
esac

if ! dpkg -s python3.11-doc >/dev/null 2>&1; then
  echo "installing python3.11-doc ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3.11-doc >&2
fi

if [[ ! -f "${HTML_ROOT}/index.html" ]]; then
  echo "python3.11-doc is installed but ${HTML_ROOT}/index.html is missing" >&2
  exit 1
fi

# Report the size of the benchmark's subset on stderr; fail if a listed page is missing.
CORPUS_LIST="$(dirname "${BASH_SOURCE[0]}")/answers_corpus.txt"
if [[ -f "${CORPUS_LIST}" ]]; then
  pages=0
  bytes=0
  while IFS= read -r line; do
    page="${line%%#*}"
    page="${page//[[:space:]]/}"
    [[ -z "${page}" ]] && continue
    if [[ ! -f "${HTML_ROOT}/${page}" ]]; then
      echo "corpus page missing: ${HTML_ROOT}/${page}" >&2
      exit 1
    fi
    pages=$((pages + 1))
    bytes=$((bytes + $(stat -c %s "${HTML_ROOT}/${page}")))
  done <"${CORPUS_LIST}"
  echo "corpus: ${pages} pages, ${bytes} bytes of HTML" >&2
fi

echo "${HTML_ROOT}"
