package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"flag"
	"io"

	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/inspect"
	"github.com/fedzip/fedzip/internal/boundedfile"
)

const inspectAbout = `Prints what a fedzip file holds, told apart by its first bytes:
  FZUP      an encoded update (gradient wire format), or a download stream of
            several: codec parameters, n, k, section sizes, bits per kept
            coordinate for indices and values, versions, checksum;
  FZMODEL   a model file (simulate --save-model, the coordinator's state):
            architecture, parameters, round and version, metadata, checksum;
  FZM       a signed device model (.fzm): tensors, encodings, sizes and the
            signature, verified only with --pubkey.
A file of another kind, or one that does not check, exits with status 1.`

const inspectExample = `  fedzip inspect ~/.local/state/fedzip/fedzip-model.fzm --pubkey ~/.local/state/fedzip/fedzip-model.pub.pem
  fedzip inspect model.fzmodel -o json
  fedzip inspect client-state/pending.bin      # a client's unacknowledged update
`

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	pubPath := fs.String("pubkey", "", "ed25519 public key (PEM) to verify a device model's signature (default: not verified)")
	output := fs.String("o", "table", "output format: table or json")
	files, code, done := parseArgs(ctx, fs, args, stdout, stderr, cmdHelp{"inspect", "fedzip inspect [flags] FILE", inspectAbout, inspectExample})
	if done {
		return code
	}
	switch {
	case len(files) != 1:
		return finish("inspect", stderr, usagef("want one FILE, got %d", len(files)))
	case *output != "table" && *output != "json":
		return finish("inspect", stderr, usagef("-o %q: want table or json", *output))
	}
	return finish("inspect", stderr, runInspectFile(files[0], *pubPath, *output, stdout))
}

// runInspectFile prints what path holds; a file that does not check is
// printed as far as it reads, and the error returned.
func runInspectFile(path, pubPath, output string, stdout io.Writer) error {
	data, err := boundedfile.Read(path, inspect.MaxFileBytes)
	if err != nil {
		return err
	}
	var pub ed25519.PublicKey
	if pubPath != "" && bytes.HasPrefix(data, []byte(deliver.Magic)) {
		if pub, err = deliver.ReadPublicKeyFile(pubPath); err != nil {
			return err
		}
	}
	in, ferr := inspect.Describe(path, data, pub)
	if in == nil {
		return ferr
	}
	if output == "json" {
		err = writeJSON(stdout, in)
	} else {
		err = in.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	return ferr
}
