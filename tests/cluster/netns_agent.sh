#!/bin/sh
# The launch agent of the two-hosts harness (cluster_fixture.TwoHosts): Open MPI's rsh launcher
# calls `netns_agent.sh HOST COMMAND...` where it would call `ssh HOST COMMAND...`. The command
# runs as that host: inside its network namespace ($PF_NETNS_PREFIX-HOST, which also gives it
# /etc/netns/.../hosts as /etc/hosts and a mount namespace of its own) and a UTS namespace
# whose hostname is HOST.
#
# PF_NETNS_HIDE_<HOST>=PATH=OTHER makes PATH show OTHER's content on that host only (a bind
# mount in its mount namespace): a file a host cannot read properly, for the fault tests.
set -e
host=$1
shift
[ -n "$PF_NETNS_PREFIX" ] || { echo "netns_agent.sh: PF_NETNS_PREFIX is not set" >&2; exit 2; }
eval "hide=\${PF_NETNS_HIDE_$host:-}"
exec ip netns exec "$PF_NETNS_PREFIX-$host" unshare --uts /bin/sh -c '
  hostname "$1"
  if [ -n "$3" ]; then mount --bind "${3#*=}" "${3%%=*}"; fi
  eval "$2"' netns_agent "$host" "$*" "$hide"
