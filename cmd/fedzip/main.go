// Command fedzip is federated learning with compressed updates, in one
// binary. It simulates federated rounds with virtual clients in one process
// (simulate); runs a Raft-replicated coordinator cluster (coordinator,
// cluster) and the training clients that upload compressed updates to it
// over gRPC (client, with dev-certs for local TLS); compresses a trained
// model into a signed device file and runs, inspects, exports or fetches it
// (compress, predict, inspect, export, fetch-model); and plots runs
// (report).
//
// Usage:
//
//	fedzip COMMAND [flags]
//
// "fedzip help" lists the commands and "fedzip COMMAND -h" the flags of
// one. Every command also reads its flags from --config FILE (YAML) and
// FEDZIP_<FLAG> environment variables (package internal/cliconfig; the
// command line wins). What a command writes when no flag names a place
// goes into the work folder, $FEDZIP_HOME or ~/.local/state/fedzip
// (package internal/workdir), never into the current directory.
//
// The package only parses flags and wires packages: the logic is in the
// packages it calls. run is main without os.Exit, for tests.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/fedzip/fedzip/internal/workdir"
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

// usage prints the main help: the commands in two aligned columns, and
// where files go by default.
func usage(w io.Writer) {
	fmt.Fprintln(w, "fedzip: federated learning with compressed updates")
	fmt.Fprintln(w, "\nUsage: fedzip COMMAND [flags]\n\nCommands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun 'fedzip COMMAND -h' for a command's flags.\nWork folder (default state, device model, certificates; $%s): %s\n", workdir.Env, workdir.Path(""))
}
