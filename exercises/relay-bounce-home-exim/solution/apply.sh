#!/bin/sh
# The teacher's solution, applied with the commands a student has: solution/apply.sh LAB
# (TESTBED: the testbed command, default `testbed`). Keep this directory from the students.
#
# To the IPv4-only Exim relay, skimbee.net's IPv6-only MX does not exist, so the
# dnslookup router cannot route the bounce. A manualroute router ahead of it sends
# skimbee.net's mail to mx10, brainbird.nl's dual-stack MX, which takes it the
# last step over IPv6; mx10 must count the relay among its relay_from_hosts.
set -eu
LAB=$1
TESTBED=${TESTBED:-testbed}
relay4=$($TESTBED exec "$LAB" relay "ip -4 -o addr show eth0 | awk '{print \$4}' | cut -d/ -f1")
$TESTBED exec "$LAB" mx10 "sed -i 's|^hostlist relay_from_hosts = <; .*|& ; $relay4|' /etc/exim4/exim4.conf \
  && exim -bV >/dev/null && kill -HUP \$(cat /run/exim4/exim.pid)"
$TESTBED exec "$LAB" relay "sed -i 's|^dnslookup:\$|skimbee_via_mx10:\n  driver = manualroute\n  domains = skimbee.net\n  route_data = mx10.brainbird.nl\n  transport = remote_smtp\n  no_more\n\n&|' /etc/exim4/exim4.conf \
  && exim -bV >/dev/null && kill -HUP \$(cat /run/exim4/exim.pid)"
