package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	meshtls "github.com/meshd/meshd/tls"
)

// cmdCA is `meshd ca init|issue`: the mesh CA of docs/tls.md.
func cmdCA(args []string, stdout, stderr io.Writer) int {
	const usage = "usage: meshd ca init --dir DIR [--force]\n       meshd ca issue --dir DIR --mesh MESH --node NAME [--ttl 24h] [--dns NAME,...] [--out DIR] [--every 8h]"
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return caIssueCtx(ctx, args, stdout, stderr)
}

// caIssueCtx is caIssue with the context that ends an --every loop, for tests.
func caIssueCtx(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd ca issue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o issueOpts
	fs.StringVar(&o.dir, "dir", "", "the CA directory (meshd ca init); NAME.crt and NAME.key are written there unless --out is given")
	fs.StringVar(&o.out, "out", "", "write NAME.crt, NAME.key and a copy of ca.crt to this directory instead (the CA directory may then be read-only)")
	fs.StringVar(&o.mesh, "mesh", "", "mesh name: the SPIFFE trust domain")
	fs.StringVar(&o.node, "node", "", "virtual node name: the certificate's SPIFFE ID is spiffe://MESH/NAME")
	fs.DurationVar(&o.ttl, "ttl", meshtls.DefaultWorkloadTTL, "certificate lifetime")
	dns := fs.String("dns", "", "comma-separated DNS SANs to add (e.g. the virtual service names the node serves)")
	every := fs.Duration("every", 0, "keep running and issue a new certificate at this interval (e.g. 8h for a 24h --ttl) until SIGTERM or SIGINT; 0: issue once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.dns = splitList(*dns)
	if o.dir == "" || o.mesh == "" || o.node == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "meshd ca issue: --dir, --mesh and --node are required, and nothing else")
		return 2
	}
	if o.ttl <= 0 || *every < 0 {
		fmt.Fprintf(stderr, "meshd ca issue: --ttl %s, --every %s: want positive durations\n", o.ttl, *every)
		return 2
	}
	if *every >= o.ttl {
		fmt.Fprintf(stderr, "meshd ca issue: --every %s is not shorter than --ttl %s: certificates would expire before the next one\n", *every, o.ttl)
		return 2
	}
	if err := o.issue(stdout); err != nil {
		fmt.Fprintf(stderr, "meshd ca issue: %v\n", err)
		return 1
	}
	if *every == 0 {
		return 0
	}
	t := time.NewTicker(*every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
			// A failure (the CA directory briefly unreadable) is reported and tried
			// again at the next tick; the last certificate is valid until its --ttl.
			if err := o.issue(stdout); err != nil {
				fmt.Fprintf(stderr, "meshd ca issue: %v (trying again in %s)\n", err, *every)
			}
		}
	}
}

type issueOpts struct {
	dir, out, mesh, node string
	dns                  []string
	ttl                  time.Duration
}

// issue reads the CA (again each time: it may have been replaced) and writes one
// certificate.
func (o issueOpts) issue(stdout io.Writer) error {
	ca, err := meshtls.LoadCA(o.dir)
	if err != nil {
		return err
	}
	wc, err := ca.Issue(meshtls.WorkloadRequest{Mesh: o.mesh, Node: o.node, DNSNames: o.dns, TTL: o.ttl})
	if err != nil {
		return err
	}
	dest := o.dir
	if o.out != "" && o.out != o.dir {
		dest = o.out
		// The node's trust, beside its certificate; written first, so a watcher of the
		// directory never holds a certificate without the CA that verifies it.
		if err := meshtls.WriteFileAtomic(filepath.Join(dest, meshtls.CACertFile), ca.CertPEM(), 0o644); err != nil {
			return err
		}
	}
	certPath, keyPath, err := meshtls.WriteWorkload(dest, o.node, wc)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %s: %s (chain), %s (mode 0600), valid until %s\n",
		wc.ID, certPath, keyPath, wc.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}
