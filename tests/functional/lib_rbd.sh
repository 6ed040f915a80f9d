# Sourced by the RBD tests after lib.sh: starts a one-node Ceph cluster in
# $WORK/ceph (scripts/ceph-cluster.sh), stopped at exit, and defines
# CONF (its config) and rbd_cli (the rbd tool against it, bounded in time).
need ceph-mon ceph-osd ceph-mgr rbd
: "${BOWSTACK_SRC:?set BOWSTACK_SRC to the source tree}"

CLUSTER=$WORK/ceph
"$BOWSTACK_SRC/scripts/ceph-cluster.sh" start "$CLUSTER" || fail "the Ceph cluster did not start"
add_cleanup '"$BOWSTACK_SRC/scripts/ceph-cluster.sh" stop "$CLUSTER"'
CONF=$CLUSTER/ceph.conf
rbd_cli() { timeout 60 rbd -c "$CONF" "$@"; }
