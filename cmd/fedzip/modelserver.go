package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/fedzip/fedzip/coordinator/server"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/deliver/fetch"
	"github.com/fedzip/fedzip/transport"
)

func runFetchModel(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fetch-model", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:7080"+server.ModelPath, "where the coordinator serves its delivered model")
	pubPath := fs.String("pubkey", "", "the coordinator's ed25519 public key (PEM): the file is verified against it")
	out := fs.String("out", "model.fzm", "where to write the verified file; a model already there is the reference for --allow-downgrade")
	ca := fs.String("ca", "", "CA of the server's certificate, for https")
	allowDowngrade := fs.Bool("allow-downgrade", false, "accept a model older than the one at --out (or one with no signed version while that one has one)")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "fetch-model", "Downloads the newest delivered model from a coordinator and verifies its signature before writing it.\n"+
		"The version printed is the one inside the signed file; a model older than the one already at --out is refused unless --allow-downgrade.",
		"  fedzip fetch-model --url https://127.0.0.1:7080/v1/model --ca certs/ca.pem --pubkey key.pub.pem --out model.fzm\n"); done {
		return code
	}
	if *pubPath == "" {
		fmt.Fprintln(stderr, "fedzip fetch-model: --pubkey is required: an unverified model is never written")
		return exitUsage
	}
	pub, err := deliver.ReadPublicKeyFile(*pubPath)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
		return exitError
	}
	opt := fetch.Options{Client: &http.Client{Timeout: time.Minute}, PublicKey: pub, AllowDowngrade: *allowDowngrade}
	if *ca != "" {
		tlsCfg, err := transport.ClientTLSConfig(*ca, "", "")
		if err != nil {
			fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
			return exitError
		}
		opt.Client.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	if opt.Held, err = fetch.ReadHeld(*out, pub, 0); err != nil && !*allowDowngrade {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v (remove it, or pass --allow-downgrade to overwrite it)\n", err)
		return exitError
	}
	m, err := fetch.Fetch(ctx, *url, opt)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: refusing the model: %v\n", err)
		return exitError
	}
	if err := writeFileAtomic(*out, m.Signed); err != nil {
		fmt.Fprintf(stderr, "fedzip fetch-model: %v\n", err)
		return exitError
	}
	version := "with no signed version"
	if m.Versioned {
		version = "version " + strconv.FormatUint(m.Version, 10)
	}
	fmt.Fprintf(stdout, "fetched model %s (%d bytes, %d tensors), signature verified, written to %s\n", version, len(m.Signed), len(m.File.Tensors), *out)
	return exitOK
}
