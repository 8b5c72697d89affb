#!/bin/sh
# The teacher's solution, applied with the commands a student has: solution/apply.sh LAB
# (TESTBED: the testbed command, default `testbed`). Keep this directory from the students.
#
# glibc's getaddrinfo sorts the answers by /etc/gai.conf's precedence table
# (RFC 3484 section 10.3): giving IPv4-mapped addresses the highest precedence
# puts the A record first, so a client that only ever tries the first address
# uses IPv4. The catch: one `precedence` line replaces glibc's whole built-in
# table, so its other entries are written out again.
set -eu
LAB=$1
TESTBED=${TESTBED:-testbed}
$TESTBED exec "$LAB" laptop "printf '%s\\n' \\
  'precedence ::1/128 50' 'precedence ::/0 40' 'precedence 2002::/16 30' 'precedence ::/96 20' \\
  'precedence ::ffff:0:0/96 100' > /etc/gai.conf && getent ahosts mail.example.net | head -1"
