package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// cmdCA is `meshd ca init|issue`: the mesh CA of docs/tls.md.
func cmdCA(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: meshd ca init --dir DIR [--force]\n       meshd ca issue --dir DIR --mesh MESH --node NAME [--ttl 24h] [--dns NAME,...]"
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "issue":
		return caIssue(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "meshd ca: unknown action %q (want init or issue)\n%s\n", args[0], usage)
		return 2
	}
}

func caInit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd ca init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for ca.crt and ca.key (created with mode 0700 if missing)")
	force := fs.Bool("force", false, "replace an existing CA; certificates the old one issued stop being trusted")
	validity := fs.Duration("validity", meshtls.DefaultCAValidity, "how long the root is valid")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "meshd ca init: --dir DIR is required, and nothing else")
		return 2
	}
	ca, err := meshtls.InitCA(*dir, *force, meshtls.CAOptions{Validity: *validity})
	if err != nil {
		fmt.Fprintf(stderr, "meshd ca init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "mesh CA written: %s/%s (share it: the trust of every node), %s/%s (mode 0600; keep it secret)\nvalid until %s\n",
		*dir, meshtls.CACertFile, *dir, meshtls.CAKeyFile, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return 0
}

func caIssue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd ca issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the CA directory (meshd ca init); NAME.crt and NAME.key are written there")
	mesh := fs.String("mesh", "", "mesh name: the SPIFFE trust domain")
	node := fs.String("node", "", "virtual node name: the certificate's SPIFFE ID is spiffe://MESH/NAME")
	ttl := fs.Duration("ttl", meshtls.DefaultWorkloadTTL, "certificate lifetime")
	dns := fs.String("dns", "", "comma-separated DNS SANs to add (e.g. the virtual service names the node serves)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || *mesh == "" || *node == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "meshd ca issue: --dir, --mesh and --node are required, and nothing else")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintf(stderr, "meshd ca issue: --ttl %s: want a positive duration\n", *ttl)
		return 2
	}
	ca, err := meshtls.LoadCA(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "meshd ca issue: %v\n", err)
		return 1
	}
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: *mesh, Node: *node, DNSNames: splitList(*dns), TTL: *ttl})
	if err != nil {
		fmt.Fprintf(stderr, "meshd ca issue: %v\n", err)
		return 1
	}
	certPath, keyPath, err := meshtls.WriteWorkload(*dir, *node, wc)
	if err != nil {
		fmt.Fprintf(stderr, "meshd ca issue: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "issued %s: %s (chain), %s (mode 0600), valid until %s\n",
		wc.ID, certPath, keyPath, wc.Cert.NotAfter.UTC().Format(time.RFC3339))
	return 0
}
