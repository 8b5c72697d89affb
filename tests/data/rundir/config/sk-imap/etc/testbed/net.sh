# Network settings of sk-imap (mailstore, ipv6), rendered by testbed.
# Sourced by tb-init on every container start.
tb_wait_addr 198.18.6.111 || return 1
tb_wait_addr 2001:db8:6::111 || return 1
# v6net is IPv6 only for this host: drop the IPv4 address the engine insisted on.
ifname=$(tb_ifname_of 2001:db8:6::111)
ip -4 addr flush dev "$ifname"
ip -4 route flush dev "$ifname"
# No default route: nothing outside the lab is reachable.
while ip -4 route del default 2>/dev/null; do :; done
while ip -6 route del default 2>/dev/null; do :; done
ip -6 route replace 2001:db8:5::/64 via 2001:db8:6::2
# 2001:db8:6::1 is the Docker bridge, i.e. the machine itself: not part of the lab.
ip -6 route replace prohibit 2001:db8:6::1
# Sealed beyond routes (a chain of our own, emptied and refilled on every start):
# Docker's embedded DNS at 127.0.0.11 is never used (resolv.conf names the lab
# DNS) and answers nothing here; the bridge's link-local addresses (fe80::1 and
# its EUI-64 one, i.e. the machine) are not reachable: link-local is for
# neighbour discovery only, lab traffic uses the lab's own addresses.
iptables -w -N TESTBED-SEAL 2>/dev/null || iptables -w -F TESTBED-SEAL
iptables -w -C OUTPUT -j TESTBED-SEAL 2>/dev/null || iptables -w -I OUTPUT -j TESTBED-SEAL
iptables -w -A TESTBED-SEAL -d 127.0.0.11 -j REJECT
ip6tables -w -N TESTBED-SEAL 2>/dev/null || ip6tables -w -F TESTBED-SEAL
ip6tables -w -C OUTPUT -j TESTBED-SEAL 2>/dev/null || ip6tables -w -I OUTPUT -j TESTBED-SEAL
ip6tables -w -A TESTBED-SEAL -d fe80::/10 -p ipv6-icmp --icmpv6-type neighbour-solicitation -j RETURN
ip6tables -w -A TESTBED-SEAL -d fe80::/10 -p ipv6-icmp --icmpv6-type neighbour-advertisement -j RETURN
ip6tables -w -A TESTBED-SEAL -d fe80::/10 -j REJECT
