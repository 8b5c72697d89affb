#!/bin/sh
# The teacher's solution, applied with the commands a student has: solution/apply.sh LAB
# (TESTBED: the testbed command, default `testbed`). Keep this directory from the students.
#
# The relay cannot reach skimbee.net's IPv6-only MX, so it hands what it cannot
# deliver (the bounce) to mx10, brainbird.nl's dual-stack MX, which takes it the
# last step over IPv6. mx10 relays only for its own networks: it must trust the
# relay's address first.
set -eu
LAB=$1
TESTBED=${TESTBED:-testbed}
relay4=$($TESTBED exec "$LAB" relay "ip -4 -o addr show eth0 | awk '{print \$4}' | cut -d/ -f1")
$TESTBED exec "$LAB" mx10 "postconf -e 'mynetworks = 127.0.0.0/8 [::1]/128 $relay4/32' && postfix reload"
$TESTBED exec "$LAB" relay "postconf -e 'smtp_fallback_relay = [mx10.brainbird.nl]' && postfix reload"
