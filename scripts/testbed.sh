#!/usr/bin/env bash
# A Shallot network across hosts: every authority, relay and user in its own Linux network
# namespace, with its own address, on one isolated bridge. Addresses are taken from the
# documentation and benchmarking ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
# 198.18.0.0/15), which are never routed, and spread over five /16s so the path rules (no two
# relays of a path in one /16) hold as they would on the Internet. Every node is started with
# the commands an operator uses (README "Running a network").
#
#   scripts/testbed.sh run [SHALLOT_BINARY]   build the network, run the checks, tear it down
#   scripts/testbed.sh down                   remove what a killed run left behind
#   KEEP_WORK=1 scripts/testbed.sh run ...     the same, keeping the logs and data directories
#
# The checks: circuits build from a user host; a message reaches an offline user both ways;
# a relay host goes off the network and comes back; an authority host goes away for good; a
# user back after its consensus expired, with no authority in reach, gets one from a guard.
# Needs root and iproute2. Exits 0 when every check passes; on a failure, prints the logs.
set -euo pipefail

PREFIX="shtb$$"        # namespace names: unique per run, so runs never share anything
BRIDGE_NS="${PREFIX}-br"
WORK="${TMPDIR:-/tmp}/shallot-testbed-$$"
BIN="${2:-${SHALLOT_BIN:-shallot}}"
PIDS=()
NAMESPACES=()

log() { printf '[testbed %(%H:%M:%S)T] %s\n' -1 "$*"; }
fail() { log "FAIL: $*"; dump_logs; exit 1; }

dump_logs() {
    for f in "$WORK"/*.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 30 lines)"
        tail -n 30 "$f"
    done
}

# Hosts: name and address. Relays over five /16s; authorities and users beside them.
AUTHS=(auth1:192.0.2.10 auth2:198.51.100.10 auth3:203.0.113.10)
RELAYS=(relay1:192.0.2.21 relay2:198.51.100.22 relay3:203.0.113.23 relay4:198.18.0.24
        relay5:198.19.0.25 relay6:192.0.2.26 relay7:198.51.100.27 relay8:198.18.0.28)
USERS=(alice:198.18.1.31 bob:198.19.1.32)

host_ip() { local h; for h in "${AUTHS[@]}" "${RELAYS[@]}" "${USERS[@]}"; do
    [ "${h%%:*}" = "$1" ] && { echo "${h#*:}"; return; }; done; return 1; }

# Runs a command in a host's namespace, without the FIFO that keeps the daemons alive.
in_ns() { local ns="$PREFIX-$1"; shift; ip netns exec "$ns" "$@" {KEEP}>&-; }

# One host: a namespace, a veth pair to the bridge, its address, and every other address
# reachable on the link (one Ethernet segment, several /16s, as hosts behind one switch).
add_host() {
    local name="$1" ip="$2" ns="$PREFIX-$1"
    ip netns add "$ns"
    NAMESPACES+=("$ns")
    # The outer end lives in the bridge's namespace, where names need only be unique there.
    ip netns exec "$BRIDGE_NS" ip link add "$name" type veth peer name eth0 netns "$ns"
    ip netns exec "$BRIDGE_NS" ip link set "$name" master br0 up
    in_ns "$name" ip link set lo up
    in_ns "$name" ip addr add "$ip/32" dev eth0
    in_ns "$name" ip link set eth0 up
    in_ns "$name" ip route add default dev eth0
}

up() {
    mkdir -p "$WORK"
    chmod 700 "$WORK"
    # The daemons' stdin (see `start`); opened read-write so that this script is its writer.
    mkfifo "$WORK/alive"
    exec {KEEP}<>"$WORK/alive"
    ip netns add "$BRIDGE_NS"
    NAMESPACES+=("$BRIDGE_NS")
    ip netns exec "$BRIDGE_NS" ip link add br0 type bridge
    ip netns exec "$BRIDGE_NS" ip link set br0 up
    local h
    for h in "${AUTHS[@]}" "${RELAYS[@]}" "${USERS[@]}"; do
        add_host "${h%%:*}" "${h#*:}"
    done
}

down() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}

down_all() {
    local ns
    for ns in $(ip netns list | awk '{print $1}' | grep '^shtb[0-9]*-' || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$ns"
    done
}

# Starts a daemon in a host's namespace (called directly, not through a function, so that
# its pid is the daemon's). Its stdin is a FIFO whose only writer is this script, so it stops
# when the script goes away however that happens (SHALLOT_STOP_ON_STDIN_EOF), as well as on
# the SIGTERM that `down` sends.
start() {
    local name="$1"; shift
    SHALLOT_STOP_ON_STDIN_EOF=1 ip netns exec "$PREFIX-$name" "$BIN" "$@" \
        <"$WORK/alive" {KEEP}>&- >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}

# Polls `cmd` until it succeeds or `secs` pass.
wait_until() {
    local secs="$1" what="$2"; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || fail "$what (after ${secs}s)"
        sleep 0.5
    done
}

run() {
    trap down EXIT
    up
    log "hosts up: ${#AUTHS[@]} authorities, ${#RELAYS[@]} relays, ${#USERS[@]} users, in $WORK"

    # Authorities: init, then one network.toml from their entries.
    local net="$WORK/network.toml" h name ip
    : >"$net"
    for h in "${AUTHS[@]}"; do
        name="${h%%:*}"; ip="${h#*:}"
        "$BIN" directory init --data-dir "$WORK/$name" --name "$name" --address "$ip:7000" \
            | sed -n '/^\[\[authority\]\]/,/^key/p' >>"$net"
        echo >>"$net"
    done
    cat >>"$net" <<EOF
[params]
test_network = true
voting_interval_secs = ${VOTING_INTERVAL:-3}
EOF
    grep -c '^\[\[authority\]\]' "$net" | grep -qx 3 || fail "network.toml lacks authorities"
    for h in "${AUTHS[@]}"; do
        name="${h%%:*}"; ip="${h#*:}"
        start "$name" directory run --data-dir "$WORK/$name" --listen "$ip:7000" --network "$net"
    done
    local i=0
    for h in "${RELAYS[@]}"; do
        name="${h%%:*}"; ip="${h#*:}"; i=$((i + 1))
        "$BIN" relay init --data-dir "$WORK/$name" >/dev/null
        local mailbox=(); [ $i -le 5 ] && mailbox=(--mailbox)
        start "$name" relay run --data-dir "$WORK/$name" --listen "$ip:9001" --network "$net" \
            --nickname "$name" "${mailbox[@]}"
    done

    # What an authority serves, fetched from a user host.
    consensus_from() { in_ns alice curl -sf --max-time 5 "http://$(host_ip "$1"):7000/consensus"; }
    consensus_lists() { [ "$(consensus_from auth1 | grep -c '^r ')" -ge "$1" ]; }
    wait_until 120 "a consensus listing 8 relays" consensus_lists 8
    log "consensus published"

    # Users: identities and contacts, with stores encrypted under a passphrase as a real
    # user's are (read from a file, as scripts do).
    local a="$WORK/alice" b="$WORK/bob"
    printf 'testbed passphrase\n' >"$WORK/passphrase"
    export SHALLOT_PASSPHRASE_FILE="$WORK/passphrase"
    "$BIN" --data-dir "$a" id new --name alice >/dev/null
    "$BIN" --data-dir "$b" id new --name bob >/dev/null
    "$BIN" --data-dir "$a" contact add bob "$("$BIN" --data-dir "$b" id show | tail -1)"
    "$BIN" --data-dir "$b" contact add alice "$("$BIN" --data-dir "$a" id show | tail -1)"

    retry() { # retry N what cmd...: a fresh client process per try, as a user would
        local n="$1" what="$2"; shift 2
        local k
        for k in $(seq "$n"); do
            "$@" && return 0
            log "$what: try $k failed"
            sleep 2
        done
        fail "$what"
    }

    # deliver FROM TO TEXT WHAT: FROM sends TEXT to TO, who is offline, then TO comes online
    # and must receive it (a fresh client process each, as a user runs them).
    local n_inbox=0
    deliver() {
        local from="$1" to="$2" text="$3" what="$4"
        n_inbox=$((n_inbox + 1))
        local got="$WORK/$to.inbox$n_inbox"
        retry 5 "$what: $from sends" \
            in_ns "$from" "$BIN" --data-dir "$WORK/$from" send --network "$net" "$to" "$text"
        in_ns "$to" "$BIN" --data-dir "$WORK/$to" inbox --network "$net" --wait 60 --json >"$got" ||
            fail "$what: $to's inbox"
        grep -qF "$text" "$got" || fail "$what: $to did not get \"$text\""
    }

    # Optional: many one-shot client runs in a row (SOAK=N), counting failures, to catch
    # timing that only real hosts show.
    if [ "${SOAK:-0}" -gt 0 ]; then
        local k bad=0
        for k in $(seq "$SOAK"); do
            if ! in_ns bob "$BIN" --data-dir "$b" inbox --network "$net" >>"$WORK/soak.out" 2>&1; then
                bad=$((bad + 1)); tail -1 "$WORK/soak.out"
            fi
        done
        log "soak: $bad of $SOAK inbox runs failed"
        [ "$bad" = 0 ] || fail "inbox runs failed"
    fi

    # 1. Circuits from a user host.
    retry 5 "circuits from alice" in_ns alice "$BIN" --data-dir "$a" circuit --network "$net" --count 5

    # 2. Both come online once (publishing their prekey bundles), then bob goes offline.
    retry 5 "bob online once" in_ns bob "$BIN" --data-dir "$b" inbox --network "$net"
    retry 5 "alice online once" in_ns alice "$BIN" --data-dir "$a" inbox --network "$net"
    deliver alice bob "hello bob, from another host" "offline delivery"
    log "offline delivery alice -> bob"
    deliver bob alice "hello alice" "the answer"
    log "offline delivery bob -> alice"

    # 3. A relay host drops off the network, then comes back.
    in_ns relay6 ip link set eth0 down
    retry 5 "circuits while relay6 is unreachable" \
        in_ns alice "$BIN" --data-dir "$a" circuit --network "$net" --count 5
    in_ns relay6 ip link set eth0 up
    in_ns relay6 ip route add default dev eth0 2>/dev/null || true
    deliver alice bob "relay6 came back" "relay6 away and back"
    log "relay host lost and back"

    # 4. An authority host goes away for good: two of three still make the consensus.
    in_ns auth3 ip link set eth0 down
    local gone_at=$(date +%s)
    # A consensus made after auth3 left, signed by the two that remain (a client needs two).
    newer_consensus() {
        local doc
        doc=$(consensus_from auth1) || return 1
        [ "$(echo "$doc" | awk '/^valid-after/ {print $2}')" -gt "$gone_at" ] &&
            [ "$(echo "$doc" | grep -c '^directory-signature')" -ge 2 ]
    }
    wait_until 120 "a consensus after auth3 left" newer_consensus
    deliver alice bob "two of three authorities" "one authority gone"
    log "authority host gone: the network carries on"

    # 5. Bob comes back after the consensus he holds expired, with every authority out of his
    #    reach: his guard, on another host, sends him the diff from it (spec §5.12, §5.13).
    local held_after held_until
    held_after=$(awk '/^valid-after/ {print $2; exit}' "$b/consensus.txt")
    held_until=$(awk '/^valid-until/ {print $2; exit}' "$b/consensus.txt")
    [ -n "$held_until" ] || fail "bob holds no cached consensus"
    held_expired() { [ "$(date +%s)" -gt "$held_until" ]; }
    wait_until 120 "bob's consensus expired" held_expired
    for h in "${AUTHS[@]}"; do in_ns bob ip route add blackhole "${h#*:}/32"; done
    in_ns bob curl -s --max-time 2 "http://$(host_ip auth1):7000/consensus" >/dev/null &&
        fail "bob still reaches an authority"
    deliver alice bob "back after expiry" "no authority in bob's reach"
    local now_after
    now_after=$(awk '/^valid-after/ {print $2; exit}' "$b/consensus.txt")
    [ "$now_after" -gt "$held_after" ] ||
        fail "bob's consensus is not newer (valid-after $now_after, held $held_after-$held_until)"
    log "bob held one valid $held_after-$held_until, now one valid from $now_after"
    log "a user back after expiry, no authority in reach: a consensus from a guard"
    log "PASS"
}

case "${1:-}" in
    run) run ;;
    down) down_all ;;
    *) echo "usage: $0 run [SHALLOT_BINARY] | down" >&2; exit 2 ;;
esac
