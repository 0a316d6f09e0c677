package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meshd/meshd/proxy/intercept"
)

func TestOwnerWarning(t *testing.T) {
	unreadable := fmt.Errorf("%w: iptables-save: permission denied", intercept.ErrRulesUnreadable)
	notExempt := fmt.Errorf("%w: running as uid 0", intercept.ErrNotExempt)
	cases := []struct {
		name     string
		err      error
		uid, gid int
		env      map[string]string
		want     string // substring; "" means no warning
	}{
		{"exempt", nil, 1337, 1337, nil, ""},
		{"not exempt", notExempt, 0, 0, nil, "not exempt"},
		{"unreadable, plain local run", unreadable, 1000, 1000, nil, ""},
		{"unreadable, default uid", unreadable, 1337, 1337, map[string]string{"APPMESH_APP_PORTS": "8080"}, ""},
		{"unreadable, wrong uid", unreadable, 1000, 1000, map[string]string{"APPMESH_APP_PORTS": "8080"}, "uids [1337]"},
		{"unreadable, configured uid", unreadable, 2000, 1, map[string]string{"APPMESH_IGNORE_UID": "2000"}, ""},
		{"unreadable, configured gid", unreadable, 5, 3000, map[string]string{"APPMESH_IGNORE_GID": "3000"}, ""},
		{"unreadable, other configured uid", unreadable, 1337, 1, map[string]string{"APPMESH_IGNORE_UID": "2000"}, "uids [2000]"},
		{"unreadable, bad env", unreadable, 1337, 1, map[string]string{"APPMESH_IGNORE_UID": "x"}, `"x"`},
		{"other error", fmt.Errorf("boom"), 0, 0, map[string]string{"APPMESH_APP_PORTS": "8080"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ownerWarning(c.err, c.uid, c.gid, func(k string) string { return c.env[k] })
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Errorf("ownerWarning = %q, want one containing %q", got, c.want)
			}
		})
	}
}
