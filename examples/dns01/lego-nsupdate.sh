#!/bin/sh
# A DNS-01 hook in the shape lego's exec provider calls (certreconcile's `exec` kind calls it the same way):
#   lego-nsupdate.sh present|cleanup FQDN VALUE
# It adds (removes) the TXT value by nsupdate (RFC 2136, TSIG) at one server; nsupdate finds the zone.
# Settings from the environment: NSUPDATE_SERVER, NSUPDATE_PORT (default 53), NSUPDATE_KEY_NAME
# (default certreconcile) and the base64 hmac-sha256 secret in NSUPDATE_TSIG_SECRET (read by
# nsupdate from its standard input, never on a command line).
set -eu
action=$1 fqdn=$2 value=$3
case "$action" in
  present) change="update add $fqdn 60 IN TXT \"$value\"" ;;
  cleanup) change="update delete $fqdn IN TXT \"$value\"" ;;
  *) echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2 ;;
esac
nsupdate <<EOF
server $NSUPDATE_SERVER ${NSUPDATE_PORT:-53}
key hmac-sha256:${NSUPDATE_KEY_NAME:-certreconcile} $NSUPDATE_TSIG_SECRET
$change
send
EOF
echo "$action $fqdn: done"
