#!/usr/bin/env bash
# Makes the text corpora in data/ from Debian packages (nothing is downloaded
# from anywhere else):
#   data/austen/<book>.txt  six Jane Austen novels (public domain), from the
#                           R package janeaustenr (Debian r-cran-janeaustenr)
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
