#!/bin/sh
# Build an extension's install or upgrade script from the sources its manifest lists.
#
#   build_script.sh install EXTNAME VERSION MANIFEST
#   build_script.sh upgrade EXTNAME FROM_VERSION TO_VERSION MANIFEST
#
# A manifest line is "<path> always" or "<path> once <version>" (pgai's split):
#   always       idempotent code (CREATE OR REPLACE ...): in the install script and in every upgrade script;
#   once V       a run-once migration introduced in version V (tables, columns, drops): in the install
#                script, and in the upgrade scripts from versions older than V.
# Paths are relative to sql/, except "python/<package>", which embeds that Python package's modules
# into the function ml_stack._python_source(module) (see docs/python-engine.md).
set -eu
mode=$1
ext=$2
if [ "$mode" = install ]; then
    to=$3; from=; manifest=$4
    printf -- "-- %s %s install script. Generated from sql/ by 'make'; do not edit.\n" "$ext" "$to"
    printf -- "\\\\echo Use \"CREATE EXTENSION %s\" to load this file. \\\\quit\n" "$ext"
else
    from=$3; to=$4; manifest=$5
    printf -- "-- %s upgrade script %s -> %s. Generated from sql/ by 'make'; do not edit.\n" "$ext" "$from" "$to"
    printf -- "\\\\echo Use \"ALTER EXTENSION %s UPDATE TO '%s'\" to load this file. \\\\quit\n" "$ext" "$to"
fi

# true when version $1 is newer than version $2
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]; }

embed_python() {
    package=$1
    printf "\n-- source: %s (generated: the package's modules as text)\n" "$package"
    printf "CREATE OR REPLACE FUNCTION ml_stack._python_source(module text)\nRETURNS text\n"
    printf "LANGUAGE sql IMMUTABLE PARALLEL SAFE\nSET search_path = pg_catalog, pg_temp\n"
    printf "AS \$ml_stack_build\$\nSELECT CASE module\n"
    modules=
    for file in $(ls "$package"/*.py | sort); do
        name=$(basename "$package")
        base=$(basename "$file" .py)
        [ "$base" = __init__ ] || name="$name.$base"
        if grep -q -e 'ml_stack_py\$' -e 'ml_stack_build\$' "$file"; then
            echo "build_script.sh: $file contains a quoting tag of the build" >&2; exit 1
        fi
        printf "WHEN '%s' THEN \$ml_stack_py\$" "$name"
        cat "$file"
        printf "\$ml_stack_py\$\n"
        modules="$modules${modules:+, }'$name'"
    done
    printf "END\n\$ml_stack_build\$;\n"
    printf "CREATE OR REPLACE FUNCTION ml_stack._python_modules()\nRETURNS text[]\n"
    printf "LANGUAGE sql IMMUTABLE PARALLEL SAFE\nSET search_path = pg_catalog, pg_temp\n"
    printf "AS \$\$ SELECT ARRAY[%s] \$\$;\n" "$modules"
}

grep -v '^[[:space:]]*#' "$manifest" | while read -r file run since; do
    [ -n "$file" ] || continue
    case $run in
        always) ;;
        once) [ -z "$from" ] || newer "$since" "$from" || continue ;;
        *) echo "build_script.sh: $manifest: '$file' needs 'always' or 'once <version>'" >&2; exit 1 ;;
    esac
    case $file in
        python/*) embed_python "$file" ;;
        *) printf "\n-- source: sql/%s\n" "$file"; cat "sql/$file" ;;
    esac
done
