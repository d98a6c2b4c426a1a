#!/bin/sh
# A hook script in the shape lego's exec provider calls: `lego-nsupdate.sh present|cleanup FQDN VALUE`.
# It publishes by nsupdate (RFC 2136, TSIG) to one server; nsupdate finds the zone by itself.
# Settings from the environment: NSUPDATE_SERVER, NSUPDATE_PORT, NSUPDATE_KEY_NAME, and the
# base64 hmac-sha256 secret in NSUPDATE_TSIG_SECRET (given to nsupdate on its standard input).
set -eu
action=$1 fqdn=$2 value=$3
case "$action" in
  present) change="update add $fqdn 60 IN TXT \"$value\"" ;;
  cleanup) change="update delete $fqdn IN TXT \"$value\"" ;;
  *) echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2 ;;
esac
nsupdate <<EOF
server $NSUPDATE_SERVER $NSUPDATE_PORT
key hmac-sha256:$NSUPDATE_KEY_NAME $NSUPDATE_TSIG_SECRET
$change
send
EOF
echo "$action $fqdn: done"
