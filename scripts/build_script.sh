#!/bin/sh
# Concatenate the SQL sources named in the manifest into one install script.
# usage: build_script.sh VERSION MANIFEST
set -eu
version=$1
manifest=$2
printf -- "-- ml_stack %s install script. Generated from sql/ by 'make'; do not edit.\n" "$version"
printf -- "\\\\echo Use \"CREATE EXTENSION ml_stack\" to load this file. \\\\quit\n"
grep -v '^#' "$manifest" | while read -r file; do
    [ -n "$file" ] || continue
    printf "\n-- source: sql/%s\n" "$file"
    cat "sql/$file"
done
