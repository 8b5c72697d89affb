#!/bin/sh
# The teacher's solution, applied with the commands a student has: solution/apply.sh LAB
# (TESTBED: the testbed command, default `testbed`). Keep this directory from the students.
#
# IPv6-only mx20 cannot reach skimbee.net's IPv4-only MX, so it hands what it
# cannot deliver (its bounce) to mx30, brainbird.nl's dual-stack backup MX,
# which takes it the last step over IPv4. mx30 relays only for its own
# networks: it must trust mx20's address first. skimbee.net's side is untouched.
set -eu
LAB=$1
TESTBED=${TESTBED:-testbed}
mx20=$($TESTBED exec "$LAB" mx20 "ip -6 -o addr show eth0 scope global | awk '{print \$4}' | cut -d/ -f1 | head -1")
$TESTBED exec "$LAB" mx30 "postconf -e 'mynetworks = 127.0.0.0/8 [::1]/128 [$mx20]/128' && postfix reload"
$TESTBED exec "$LAB" mx20 "postconf -e 'smtp_fallback_relay = [mx30.brainbird.nl]' && postfix reload"
