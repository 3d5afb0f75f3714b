package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

type clusterFlags struct {
	coordinators, clusterID, clusterSecret string
	ca, cert, key, output                  string
	insecure                               bool
	id, raftAddr, grpcAddr                 string
}

const clusterUsage = `Usage: fedzip cluster status|add|remove [flags]

  status   each node's process ID, role, term, last applied index, round, model
           version and hash
  add      add a node: --id ID --raft-addr HOST:PORT --grpc-addr HOST:PORT
           (a node started with --join adds itself; this is for operators)
  remove   remove a node: --id ID

Flags:
`

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "status" && args[0] != "add" && args[0] != "remove" && args[0] != "-h" && args[0] != "--help") {
		fmt.Fprintln(stderr, "fedzip cluster: want a subcommand: status, add or remove (run 'fedzip cluster -h' for help)")
		return exitUsage
	}
	sub := args[0]
	var f clusterFlags
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.StringVar(&f.coordinators, "coordinator", "127.0.0.1:7070", "gRPC addresses of coordinator nodes, comma-separated")
	fs.StringVar(&f.clusterID, "cluster-id", "fedzip", "cluster name")
	fs.StringVar(&f.clusterSecret, "cluster-secret", "", "cluster secret, for add and remove (also $FEDZIP_CLUSTER_SECRET)")
	fs.StringVar(&f.ca, "ca", "", "CA of the nodes' certificates")
	fs.StringVar(&f.cert, "cert", "", "client certificate, if the nodes require mTLS")
	fs.StringVar(&f.key, "key", "", "client key")
	fs.BoolVar(&f.insecure, "insecure", false, "connect without TLS")
	fs.StringVar(&f.output, "o", "table", "output: table or json")
	fs.StringVar(&f.id, "id", "", "node ID (add, remove)")
	fs.StringVar(&f.raftAddr, "raft-addr", "", "the node's Raft address (add)")
	fs.StringVar(&f.grpcAddr, "grpc-addr", "", "the node's gRPC address (add)")
	addConfigFlag(fs)
	fs.SetOutput(io.Discard)
	if sub == "-h" || sub == "--help" {
		fmt.Fprint(stdout, clusterUsage)
		printDefaults(fs, stdout)
		return exitOK
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) { // 'cluster status --help': help exits 0 everywhere
			fmt.Fprint(stdout, clusterUsage)
			printDefaults(fs, stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "fedzip cluster %s: %v (run 'fedzip cluster -h' for help)\n", sub, flagError(fs, err))
		return exitUsage
	}
	if code, done := configure(ctx, fs, "cluster", stderr); done {
		return code
	}
	if f.output != "table" && f.output != "json" {
		fmt.Fprintf(stderr, "fedzip cluster: -o %q: want table or json\n", f.output)
		return exitUsage
	}
	var tlsCfg *tls.Config
	if !f.insecure {
		if f.ca == "" {
			fmt.Fprintln(stderr, "fedzip cluster: --ca is required (or --insecure)")
			return exitUsage
		}
		var err error
		if tlsCfg, err = transport.ClientTLSConfig(f.ca, f.cert, f.key); err != nil {
			fmt.Fprintf(stderr, "fedzip cluster: %v\n", err)
			return exitError
		}
	}
	if (sub == "add" || sub == "remove") && f.clusterSecret == "" {
		// The nodes refuse an empty secret anyway; say so before asking.
		fmt.Fprintf(stderr, "fedzip cluster %s: --cluster-secret (or $FEDZIP_CLUSTER_SECRET) is required\n", sub)
		return exitUsage
	}
	addrs := splitList(f.coordinators)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var err error
	switch sub {
	case "status":
		err = clusterStatus(ctx, addrs, tlsCfg, f, stdout)
	case "add":
		if f.id == "" || f.raftAddr == "" || f.grpcAddr == "" {
			fmt.Fprintln(stderr, "fedzip cluster add: --id, --raft-addr and --grpc-addr are required")
			return exitUsage
		}
		err = server.CallCluster(ctx, addrs, tlsCfg, f.insecure, func(c fedzippb.ClusterClient) error {
			_, err := c.Join(ctx, &fedzippb.JoinRequest{ClusterId: f.clusterID, ClusterSecret: f.clusterSecret, NodeId: f.id, RaftAddress: f.raftAddr, GrpcAddress: f.grpcAddr})
			return err
		})
		if err == nil {
			fmt.Fprintf(stdout, "added node %s\n", f.id)
		}
	case "remove":
		if f.id == "" {
			fmt.Fprintln(stderr, "fedzip cluster remove: --id is required")
			return exitUsage
		}
		err = server.CallCluster(ctx, addrs, tlsCfg, f.insecure, func(c fedzippb.ClusterClient) error {
			_, err := c.Remove(ctx, &fedzippb.RemoveRequest{ClusterId: f.clusterID, ClusterSecret: f.clusterSecret, NodeId: f.id})
			return err
		})
		if err == nil {
			fmt.Fprintf(stdout, "removed node %s\n", f.id)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "fedzip cluster %s: %v\n", sub, transport.ExplainTLSError(err))
		return exitError
	}
	return exitOK
}

// clusterStatus asks one node for the node registry, then each node for
// its own state.
func clusterStatus(ctx context.Context, addrs []string, tlsCfg *tls.Config, f clusterFlags, w io.Writer) error {
	conn, err := transport.Dial(ctx, addrs, transport.ClientConfig{TLS: tlsCfg, Insecure: f.insecure})
	if err != nil {
		return err
	}
	reg, err := fedzippb.NewCoordinatorClient(conn).ClusterStatus(ctx, &fedzippb.ClusterStatusRequest{})
	conn.Close()
	if err != nil {
		return err
	}
	type row struct {
		ID          string `json:"id"`
		GRPC        string `json:"grpc_address"`
		Raft        string `json:"raft_address"`
		Role        string `json:"role"`
		Term        uint64 `json:"term"`
		LastApplied uint64 `json:"last_applied"`
		Commit      uint64 `json:"commit_index"`
		Round       uint64 `json:"round"`
		Version     uint64 `json:"model_version"`
		Hash        string `json:"model_hash"`
		PID         uint32 `json:"pid,omitempty"`
		Error       string `json:"error,omitempty"`
	}
	var rows []row
	for _, n := range reg.GetNodes() {
		r := row{ID: n.GetId(), GRPC: n.GetGrpcAddress(), Raft: n.GetAddress()}
		st, err := nodeStatus(ctx, n.GetGrpcAddress(), tlsCfg, f)
		if err != nil {
			r.Role, r.Error = "unreachable", err.Error()
		} else {
			r.Role, r.Term, r.LastApplied, r.Commit = st.GetRole(), st.GetTerm(), st.GetLastApplied(), st.GetCommitIndex()
			r.Round, r.Version, r.Hash, r.PID = st.GetRound(), st.GetModelVersion(), st.GetModelHash(), st.GetPid()
		}
		rows = append(rows, r)
	}
	if f.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"leader": reg.GetLeaderAddress(), "nodes": rows})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tGRPC\tRAFT\tROLE\tTERM\tAPPLIED\tCOMMIT\tROUND\tVERSION\tMODEL HASH")
	for _, r := range rows {
		hash := r.Hash
		if len(hash) > 16 {
			hash = hash[:16]
		}
		if r.Error != "" {
			hash = r.Error
		}
		pid := "-"
		if r.PID != 0 {
			pid = fmt.Sprint(r.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.ID, pid, r.GRPC, r.Raft, r.Role, r.Term, r.LastApplied, r.Commit, r.Round, r.Version, hash)
	}
	return tw.Flush()
}

func nodeStatus(ctx context.Context, addr string, tlsCfg *tls.Config, f clusterFlags) (*fedzippb.NodeStatus, error) {
	if addr == "" {
		return nil, fmt.Errorf("no gRPC address recorded")
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := transport.Dial(dctx, []string{addr}, transport.ClientConfig{TLS: tlsCfg, Insecure: f.insecure})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return fedzippb.NewClusterClient(conn).Status(dctx, &fedzippb.StatusRequest{ClusterId: f.clusterID})
}
