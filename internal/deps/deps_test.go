package deps

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/fedzip/fedzip/"

// network is what a pure package must not reach: the network and
// consensus libraries, and the project's packages built on them.
var network = []string{
	"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/hashicorp/raft",
	"github.com/hashicorp/memberlist", "github.com/prometheus/",
	mod + "transport", mod + "coordinator", mod + "membership", mod + "metrics", mod + "client/remote",
}

// TestDependencies checks, with go list -deps, that no package in the
// table reaches a banned import path (a prefix: "github.com/hashicorp/raft"
// also bans raft-boltdb). A failure names the chain of imports that leads
// there, so the edge to cut is in the message.
func TestDependencies(t *testing.T) {
	rules := []struct {
		pkg    string
		banned []string
	}{
		{"runspec", network},
		{"round", network},
		{"aggregate", network},
		{"gradient", network},
		{"compress", network},
		{"nn", network},
		{"dataset", network},
		{"sim", network},
		{"client", network},
		{"secagg", network},
		// The real client must not depend on the simulator.
		{"client/remote", []string{mod + "sim", mod + "coordinator"}},
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	args := []string{"list", "-deps", "-json=ImportPath,Imports"}
	for _, r := range rules {
		args = append(args, mod+r.pkg)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goCmd, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		imports[p.ImportPath] = p.Imports
	}
	for _, r := range rules {
		for _, chain := range reaches(imports, mod+r.pkg, r.banned) {
			t.Errorf("%s imports %s: %s", r.pkg, chain[len(chain)-1], strings.ReplaceAll(strings.Join(chain, " → "), mod, ""))
		}
	}
}

// reaches returns, for each banned package that root reaches through no
// other banned package, the shortest chain of imports from root to it.
func reaches(imports map[string][]string, root string, banned []string) [][]string {
	isBanned := func(p string) bool {
		return slices.ContainsFunc(banned, func(b string) bool { return strings.HasPrefix(p, b) })
	}
	parent := map[string]string{root: ""}
	queue := []string{root}
	var chains [][]string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range imports[p] {
			if _, seen := parent[q]; seen {
				continue
			}
			parent[q] = p
			if isBanned(q) {
				var chain []string
				for x := q; x != ""; x = parent[x] {
					chain = append(chain, x)
				}
				slices.Reverse(chain)
				chains = append(chains, chain)
				continue
			}
			queue = append(queue, q)
		}
	}
	return chains
}
