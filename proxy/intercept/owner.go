package intercept

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// appMeshEgressChain is the chain the ECS agent's aws-appmesh CNI plugin and the App
// Mesh route manager install; meshd honours their rules the same way as its own.
const appMeshEgressChain = "APPMESH_EGRESS"

var (
	// ErrNotExempt means egress interception is installed and the given UID/GID is not
	// among its ignored owners: a proxy running so would redirect its own upstream
	// connections back into itself.
	ErrNotExempt = errors.New("process is not exempt from egress interception")
	// ErrRulesUnreadable means the nat table could not be read (usually no CAP_NET_ADMIN,
	// as for meshd running unprivileged as UID 1337).
	ErrRulesUnreadable = errors.New("cannot read the nat table")
)

// Owners lists the UIDs and GIDs that an egress interception chain (MESHD_EGRESS or the
// App Mesh plugin's APPMESH_EGRESS) in an iptables-save dump exempts. found is false
// when no such chain exists.
func Owners(dump string) (uids, gids []int, found bool) {
	s := parseSave(dump)
	found = s.chains[EgressChain] || s.chains[appMeshEgressChain]
	for _, r := range s.rules {
		if c := ruleChain(r); c != EgressChain && c != appMeshEgressChain {
			continue
		}
		if ruleTarget(r) != "RETURN" {
			continue
		}
		f := strings.Fields(r)
		for i := 0; i+1 < len(f); i++ {
			// "! --uid-owner" would exempt everyone else; it is not an exemption of this id.
			if i > 0 && f[i-1] == "!" {
				continue
			}
			n, err := strconv.Atoi(f[i+1])
			if err != nil {
				continue
			}
			switch f[i] {
			case "--uid-owner":
				uids = append(uids, n)
			case "--gid-owner":
				gids = append(gids, n)
			}
		}
	}
	return uids, gids, found
}

// CheckOwner tells a starting proxy whether its own traffic, as uid/gid, escapes the IPv4
// egress interception installed in this network namespace. It returns nil when there is
// no interception or it exempts uid or gid; an error wrapping ErrNotExempt naming the
// exempt owners otherwise; and one wrapping ErrRulesUnreadable when the rules cannot be
// read, in which case the caller can only compare uid with DefaultIgnoredUID.
func CheckOwner(ctx context.Context, r Runner, backend Backend, uid, gid int) error {
	ts, err := Tools(ctx, r, IPv4, backend, false)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRulesUnreadable, err)
	}
	dump, err := ts[0].save(ctx, r)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRulesUnreadable, err)
	}
	uids, gids, found := Owners(dump)
	if !found || slices.Contains(uids, uid) || slices.Contains(gids, gid) {
		return nil
	}
	return fmt.Errorf("%w: running as uid %d gid %d, the rules exempt uids %v gids %v", ErrNotExempt, uid, gid, uids, gids)
}
