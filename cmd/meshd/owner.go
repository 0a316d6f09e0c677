package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/meshd/meshd/proxy/intercept"
)

// warnIfNotExempt logs a warning when meshd, running as uid/gid, is not exempt from
// the egress interception installed in its network namespace: its own upstream
// connections would be redirected back into its egress listener. It reads the rules
// with the iptables binaries (bounded to a few seconds) and never fails the start.
func warnIfNotExempt(logger *slog.Logger, uid, gid int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := intercept.CheckOwner(ctx, intercept.Exec{}, intercept.BackendAuto, uid, gid)
	if msg := ownerWarning(err, uid, gid, os.Getenv); msg != "" {
		logger.Warn(msg, "uid", uid, "gid", gid, "err", err)
	}
}

// ownerWarning turns CheckOwner's verdict into the warning to log, "" for none.
// When the rules cannot be read (meshd runs without CAP_NET_ADMIN, as it should), it
// can only compare uid/gid with the ignored owners the environment configures for the
// rules (APPMESH_IGNORE_UID / APPMESH_IGNORE_GID, default UID 1337), and does so only
// when the environment says interception is in use (App Mesh's APPMESH_* interception
// variables), so that a plain local run stays quiet.
func ownerWarning(err error, uid, gid int, getenv func(string) string) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, intercept.ErrNotExempt):
		return "meshd is not exempt from the egress interception rules: its upstream connections will loop back into its egress listener; run meshd as an ignored UID/GID (--ignored-uid, APPMESH_IGNORE_UID; see docs/interception.md)"
	case !errors.Is(err, intercept.ErrRulesUnreadable):
		return ""
	}
	intercepting := false
	for _, v := range []string{"APPMESH_IGNORE_UID", "APPMESH_IGNORE_GID", "APPMESH_APP_PORTS", "APPMESH_EGRESS_IGNORED_IP", "APPMESH_EGRESS_IGNORED_PORTS"} {
		if getenv(v) != "" {
			intercepting = true
		}
	}
	if !intercepting {
		return ""
	}
	uids, uerr := intercept.ParseIDs(getenv("APPMESH_IGNORE_UID"))
	gids, gerr := intercept.ParseIDs(getenv("APPMESH_IGNORE_GID"))
	if uerr != nil || gerr != nil {
		return fmt.Sprintf("cannot check that meshd is exempt from egress interception: %v", errors.Join(uerr, gerr))
	}
	if len(uids) == 0 && len(gids) == 0 {
		uids = []int{intercept.DefaultIgnoredUID}
	}
	if slices.Contains(uids, uid) || slices.Contains(gids, gid) {
		return ""
	}
	return fmt.Sprintf("meshd runs as uid %d gid %d, but the interception rules configured here ignore uids %v gids %v: its upstream connections will probably loop back into it (the rules could not be read to be sure)", uid, gid, uids, gids)
}
