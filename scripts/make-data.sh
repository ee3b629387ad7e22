#!/usr/bin/env bash
# Makes the text corpora in data/ from Debian packages (nothing is downloaded
# from anywhere else):
#   data/austen/<book>.txt  six Jane Austen novels (public domain), from the
#                           R package janeaustenr (Debian r-cran-janeaustenr)
#   data/code/python-stdlib.txt
#                           source code: 25 modules of the Python 3.11 standard
#                           library (PSF License), from Debian's
#                           libpython3.11-minimal / libpython3.11-stdlib, which
#                           every Debian 12 machine with python3 already has
# persuasion.txt is the calibration text; the others are evaluation texts
# (docs/eval.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v Rscript >/dev/null || ! Rscript -e 'library(janeaustenr)' >/dev/null 2>&1; then
    echo "make-data: installing r-cran-janeaustenr (Debian)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq r-cran-janeaustenr >/dev/null
fi

mkdir -p data/austen
if [ ! -s data/austen/emma.txt ]; then
    # One line of text per line of the book, as the package stores them.
    Rscript -e '
        library(janeaustenr)
        books <- list(sense = sensesensibility, pride = prideprejudice, mansfield = mansfieldpark,
                      emma = emma, northanger = northangerabbey, persuasion = persuasion)
        for (n in names(books)) writeLines(books[[n]], file.path("data/austen", paste0(n, ".txt")), useBytes = TRUE)
    '
    echo "make-data: wrote $(ls data/austen | wc -l) books to data/austen ($(cat data/austen/*.txt | wc -w) words)"
fi

mkdir -p data/code
if [ ! -s data/code/python-stdlib.txt ]; then
    pylib=/usr/lib/python3.11
    if [ ! -f "$pylib/argparse.py" ]; then
        # Another Python: its standard library serves, but the texts (and so the
        # measured numbers) differ from the ones in docs/results.md.
        pylib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
        echo "make-data: note: Python 3.11 sources not found, using $pylib"
    fi
    modules="argparse typing pathlib subprocess inspect dataclasses textwrap difflib shutil tarfile zipfile
             configparser csv datetime enum functools heapq json/decoder logging/__init__ statistics string
             tempfile threading traceback unittest/case"
    out=data/code/python-stdlib.txt.tmp
    : > "$out"
    for m in $modules; do
        f="$pylib/$m.py"
        [ -f "$f" ] || f="$pylib/$m/__init__.py"
        if [ ! -f "$f" ]; then echo "make-data: note: $m.py not found in $pylib, skipped"; continue; fi
        printf '# ===== %s.py (Python standard library, PSF License) =====\n\n' "$m" >> "$out"
        cat "$f" >> "$out"
        printf '\n' >> "$out"
    done
    mv "$out" data/code/python-stdlib.txt
    echo "make-data: wrote data/code/python-stdlib.txt ($(wc -c < data/code/python-stdlib.txt) bytes of Python sources)"
fi
