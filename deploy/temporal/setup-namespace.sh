#!/bin/sh
# After the Temporal server is up (temporalio/admin-tools): Lapse's namespace and the search attributes its
# runs carry (access/names.py SEARCH_ATTRIBUTES), which the Web UI filters on. Safe to run again: what exists
# is left alone. On a cluster of your own or Temporal Cloud, do the same by hand (docs/production.md).
set -eu
namespace="${LAPSE_TEMPORAL_NAMESPACE:-lapse}"
export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"

tries=0
until temporal operator cluster health >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "Temporal at $TEMPORAL_ADDRESS did not answer in 2 minutes"; exit 1; }
  sleep 2
done

temporal operator namespace describe --namespace "$namespace" >/dev/null 2>&1 \
  || temporal operator namespace create --namespace "$namespace" --retention 720h

existing="$(temporal operator search-attribute list --namespace "$namespace")"
for attribute in LapseRequester:Keyword LapseResource:Keyword LapseRole:Keyword LapseState:Keyword \
                 LapseExpiresAt:Datetime; do
  name="${attribute%%:*}"
  if ! printf '%s\n' "$existing" | grep -qw "$name"; then
    temporal operator search-attribute create --namespace "$namespace" --name "$name" --type "${attribute#*:}"
  fi
done

# The frontend learns of new attributes from its namespace cache: wait until a query on them is accepted, so
# that the first request Lapse starts does not fail on an unknown attribute.
tries=0
until temporal workflow list --namespace "$namespace" --limit 1 \
        --query 'LapseState = "ready" AND LapseExpiresAt > "2000-01-01T00:00:00Z"' >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "the search attributes are still unknown to the frontend after 2 minutes"; exit 1; }
  sleep 2
done
echo "namespace $namespace and Lapse's search attributes are ready"
