// Command fedzip is federated learning with compressed updates: it
// simulates federated rounds on one machine (simulate), and will run
// coordinators and clients and deliver compressed models.
//
// Usage:
//
//	fedzip simulate [flags]
//	fedzip coordinator [flags]
//	fedzip client [flags]
//	fedzip dev-certs DIR
//	fedzip inspect FILE
//	fedzip config print [COMMAND [FLAGS]]
//	fedzip version
//
// Run "fedzip COMMAND -h" for the flags of a command. Every command also
// reads its flags from --config FILE (YAML) and FEDZIP_<FLAG> environment
// variables; see config.go.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad flags or arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"simulate", "run federated rounds with virtual clients in this process", runSimulate},
		{"coordinator", "run a coordinator node (Raft-replicated rounds, gRPC service)", runCoordinator},
		{"client", "run a training client against a coordinator", runClient},
		{"cluster", "show, add or remove coordinator nodes", runCluster},
		{"local", "run a coordinator cluster and clients on this machine, in one command", runLocal},
		{"dev-certs", "write a CA and TLS certificates for local use", runDevCerts},
		{"compress", "compress a model into a signed device file (.fzm)", runCompress},
		{"predict", "verify a device model and predict", runPredict},
		{"export", "export a model to safetensors or ONNX", runExport},
		{"fetch-model", "download a coordinator's delivered model and verify it", runFetchModel},
		{"report", "plot and summarise runs from their --metrics-out files", runReport},
		{"inspect", "print what a fedzip file holds: encoded update, model file or device model", runInspect},
		{"config", "print a command's effective configuration (--config file, flags, $FEDZIP_*)", runConfig},
		{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) int {
			fmt.Fprintln(stdout, "fedzip", version)
			return exitOK
		}},
	}
}

const version = "0.1.0-dev"

// run dispatches to a subcommand; it is main without os.Exit, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "fedzip: unknown command %q (run 'fedzip help')\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "fedzip: federated learning with compressed updates")
	fmt.Fprintln(w, "\nUsage: fedzip COMMAND [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'fedzip COMMAND -h' for a command's flags.")
}
