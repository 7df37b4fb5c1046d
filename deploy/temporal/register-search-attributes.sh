#!/bin/sh
# Makes sure the namespace hpcinfra uses exists and knows hpcinfra's custom search attributes (all
# Keyword; the names come in KEYWORD_SEARCH_ATTRIBUTES, separated by spaces). Safe on every start:
# what exists already is left as it is. With SQL visibility, search attributes belong to a namespace.
set -eu

: "${TEMPORAL_ADDRESS:?TEMPORAL_ADDRESS is not set}"
: "${NAMESPACE:?NAMESPACE is not set}"
: "${KEYWORD_SEARCH_ATTRIBUTES:?KEYWORD_SEARCH_ATTRIBUTES is not set}"
retention="${NAMESPACE_RETENTION:-720h}"
attempts="${ATTEMPTS:-60}"
output=/tmp/register-search-attributes.out

# Runs "$@" until it succeeds, up to $attempts times two seconds apart: the server answers its health
# check before it has loaded a namespace it has just made.
retry() {
    attempt=1
    until "$@" >"$output" 2>&1; do
        if [ "$attempt" -ge "$attempts" ]; then
            cat "$output"
            return 1
        fi
        attempt=$((attempt + 1))
        sleep 2
    done
}

cli() {
    temporal "$@" --address "$TEMPORAL_ADDRESS"
}

echo "waiting for Temporal at $TEMPORAL_ADDRESS"
retry cli operator cluster health

if cli operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    # Another run may have made it meanwhile: either way, go on once it can be described.
    cli operator namespace create --namespace "$NAMESPACE" --retention "$retention" || true
    retry cli operator namespace describe --namespace "$NAMESPACE"
    echo "namespace $NAMESPACE created (retention $retention)"
fi

# The type NAME is registered with in the namespace, or nothing.
registered_type() {
    cli operator search-attribute list --namespace "$NAMESPACE" | awk -v name="$1" '$1 == name { print $2 }'
}

create_keyword() {
    cli operator search-attribute create --namespace "$NAMESPACE" --name "$1" --type Keyword ||
        [ "$(registered_type "$1")" = Keyword ]
}

for name in $KEYWORD_SEARCH_ATTRIBUTES; do
    type="$(registered_type "$name" 2>/dev/null || true)"
    if [ "$type" = Keyword ]; then
        echo "search attribute $name already exists"
    elif [ -n "$type" ]; then
        echo "search attribute $name exists with type $type, not Keyword: remove it or rename it" >&2
        exit 1
    else
        retry create_keyword "$name"
        echo "search attribute $name (Keyword) registered"
    fi
done
