package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/deliver/pipeline"
	"github.com/fedzip/fedzip/deliver/predict"
	"github.com/fedzip/fedzip/internal/boundedfile"
)

const compressAbout = `Compresses a float32 model (fedzip model file, e.g. from simulate --save-model)
into a signed device model (.fzm) with a recipe of stages, and prints a table
in the style of Deep Compression: one row per stage, measured on the file.
The model is an MLP (2nn, lenet300, mlp:...) or a conv net (cnn, lenet5, a
layer spec): conv kernels prune, cluster and quantize per tensor like fc
weights (keys convN beside fcN); prune=neurons and kd take MLPs only, and
distill turns any teacher into an MLP student.

Recipe: stages separated by ";", each "op=ARG,key:value,...":
  distill=student:mlp:H1-H2,T:4,alpha:0.7,epochs:5   train a smaller student on the teacher's soft targets
  prune=SPARSITY[,scope:layer|global][,fcN:S][,convN:S][,finetune:E][,schedule:cubic|oneshot][,steps:10]
  prune=neurons:FRACTION[,finetune:E]                 remove hidden neurons (structured)
  prune=filters:FRACTION[,convN:F][,finetune:E]      remove conv filters (structured, conv nets)
  prune=nm:2:4[,finetune:E]                           N:M sparsity
  cluster=bits:B[,fcN:B][,convN:B][,iters:30][,finetune:E][,clr:1e-4]   k-means weight sharing
  quantize=int8[,calib:minmax|percentile][,pct:99.99] | quantize=f16
  lowrank=rank:R | lowrank=energy:F [,fcN:R][,convN:R][,finetune:E]
  encode=huffman|packed[,bias:f32|f16][,codebook:f32|f16]
  finetune=E
Training keys of every stage that trains: lr (0.01), batch (64), momentum (0.9), wd (0).`

const compressExample = `  fedzip compress --gen-key key.pem          # writes key.pem (PKCS#8) and key.pub.pem
  fedzip compress --model lenet.fzmodel --out lenet.fzm --key key.pem \
      --recipe 'prune=0.92,finetune=2;cluster=bits:5,finetune=1;encode=huffman'
`

func runCompress(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compress", flag.ContinueOnError)
	model := fs.String("model", "", "input model file (fedzip float32 model, from simulate --save-model)")
	out := fs.String("out", "", "output device model file (.fzm)")
	recipe := fs.String("recipe", "", "stages to apply (see above)")
	keyPath := fs.String("key", "", "ed25519 private key to sign with (PKCS#8 PEM)")
	genKey := fs.String("gen-key", "", "write a new ed25519 key pair to FILE and FILE's .pub.pem sibling, then exit")
	dataDir := fs.String("data-dir", "", "folder with the MNIST IDX files (default: $FEDZIP_DATA_DIR, then the GoMNIST module)")
	seed := fs.Uint64("seed", 1, "seed of shuffling and student initialisation")
	output := fs.String("o", "table", "output format: table or json")
	quiet := fs.Bool("quiet", false, "print only the table")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "compress", compressAbout, compressExample); done {
		return code
	}
	if *genKey != "" {
		pubPath, err := deliver.WriteKeyPair(*genKey)
		if err == nil {
			fmt.Fprintf(stdout, "private key: %s\npublic key:  %s\n", *genKey, pubPath)
		}
		return finish("compress", stderr, err)
	}
	var err error
	switch {
	case *model == "":
		err = usagef("--model is required")
	case *out == "":
		err = usagef("--out is required")
	case *recipe == "":
		err = usagef("--recipe is required")
	case *keyPath == "":
		err = usagef("--key is required (make one with 'fedzip compress --gen-key key.pem')")
	case *output != "table" && *output != "json":
		err = usagef("-o %q: want table or json", *output)
	}
	if err == nil {
		if _, perr := pipeline.ParseRecipe(*recipe); perr != nil {
			err = usageError{perr}
		}
	}
	if err != nil {
		return finish("compress", stderr, err)
	}
	return finish("compress", stderr, compressModel(ctx, *model, *out, *recipe, *keyPath, *dataDir, *seed, *output, *quiet, stdout, stderr))
}

func compressModel(ctx context.Context, in, out, recipe, keyPath, dataDir string, seed uint64, output string, quiet bool, stdout, stderr io.Writer) error {
	key, err := deliver.ReadPrivateKeyFile(keyPath)
	if err != nil {
		return err
	}
	ck, err := checkpoint.ReadFile(in)
	if err != nil {
		return err
	}
	m, err := pipeline.FromCheckpoint(ck)
	if err != nil {
		return err
	}
	if m.Input != dataset.MNISTDim || m.Classes() != dataset.MNISTClasses {
		return fmt.Errorf("%s: model %s takes %d inputs and %d classes; compress fine-tunes and evaluates on MNIST (784, 10)", in, ck.Header.Model, m.Input, m.Classes())
	}
	dir, err := dataset.MNISTDir(dataDir)
	if err != nil {
		return fmt.Errorf("%w (set --data-dir)", err)
	}
	train, test, err := dataset.LoadMNIST(dir)
	if err != nil {
		return err
	}
	cfg := pipeline.Config{Train: train, Test: test, Key: key, Seed: seed,
		Meta: map[string]string{"source": ck.Header.Model, "source_version": strconv.FormatUint(ck.Header.Version, 10),
			deliver.MetaModelVersion: strconv.FormatUint(ck.Header.Version, 10)}}
	if !quiet && output == "table" {
		cfg.Log = stderr
	}
	res, err := pipeline.Run(ctx, m, recipe, cfg)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(out, res.File); err != nil {
		return err
	}
	return printCompress(stdout, output, res, out)
}

func printCompress(w io.Writer, output string, res *pipeline.Result, out string) error {
	if output == "json" {
		return writeJSON(w, struct {
			*pipeline.Result
			Out string `json:"out"`
		}{res, out})
	}
	if err := res.WriteTable(w); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s (%d bytes, %.1f× smaller than the %d bytes of dense float32)\n", out, len(res.File), float64(res.DenseBytes)/float64(len(res.File)), res.DenseBytes)
	return nil
}

const predictAbout = `Verifies a signed device model with a public key and predicts the class of
each input: mnist:test (MNIST's 10,000 test images and labels, found as
simulate finds them: --data-dir, $FEDZIP_DATA_DIR, then the GoMNIST module),
an IDX images file (MNIST's t10k-images-idx3-ubyte, optionally gzipped;
pixels are scaled by 1/255) or a text file of CSV lines of 784 floats (used
as they are). With labels it also prints the accuracy.`

const predictExample = `  fedzip predict --model lenet.fzm --pubkey key.pub.pem --input mnist:test --limit 5
  fedzip predict --model lenet.fzm --pubkey key.pub.pem --input digit.csv -o json
`

func runPredict(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	model := fs.String("model", "", "device model file (.fzm)")
	pubPath := fs.String("pubkey", "", "ed25519 public key that signed the model (PEM)")
	input := fs.String("input", "", "mnist:test, an IDX images file or CSV lines of floats")
	labels := fs.String("labels", "", "optional IDX labels file: also print the accuracy")
	dataDir := fs.String("data-dir", "", "folder with the MNIST IDX files, for --input mnist:test (default: $FEDZIP_DATA_DIR, then the GoMNIST module)")
	limit := fs.Int("limit", 0, "predict at most this many inputs (0: all)")
	output := fs.String("o", "table", "output format: table or json")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "predict", predictAbout, predictExample); done {
		return code
	}
	var err error
	switch {
	case *model == "":
		err = usagef("--model is required")
	case *pubPath == "":
		err = usagef("--pubkey is required")
	case *input == "":
		err = usagef("--input is required (mnist:test for MNIST's test images)")
	case *input == predict.MNISTTest && *labels != "":
		err = usagef("--labels: mnist:test brings its own labels")
	case *limit < 0:
		err = usagef("--limit %d: want 0 or more", *limit)
	case *output != "table" && *output != "json":
		err = usagef("-o %q: want table or json", *output)
	}
	if err != nil {
		return finish("predict", stderr, err)
	}
	net, err := loadNet(*model, *pubPath)
	if err != nil {
		return finish("predict", stderr, err)
	}
	in, err := predict.Read(*input, *labels, *dataDir, net.InputDim())
	if err != nil {
		return finish("predict", stderr, err)
	}
	res := predict.Run(net, in, *limit)
	if *output == "json" {
		return finish("predict", stderr, writeJSON(stdout, res.Predictions))
	}
	return finish("predict", stderr, res.WriteTable(stdout))
}

func loadNet(path, pubPath string) (*deliver.Net, error) {
	pub, err := deliver.ReadPublicKeyFile(pubPath)
	if err != nil {
		return nil, err
	}
	data, err := boundedfile.Read(path, 64<<20)
	if err != nil {
		return nil, err
	}
	net, err := deliver.Load(data, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return net, nil
}

const exportAbout = `Exports a model to another format: safetensors (float32 tensors with the
published layout) or ONNX (opset 13; weights as int8 per-output-channel
initializers with DequantizeLinear, the QDQ form). The input is a fedzip
float32 model file, or a signed device model (.fzm) with --pubkey.`

const exportExample = `  fedzip export --model lenet.fzmodel --format safetensors --out lenet.safetensors
  fedzip export --model lenet.fzm --pubkey key.pub.pem --format onnx --out lenet.onnx
`

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	model := fs.String("model", "", "input: fedzip model file, or .fzm device model (with --pubkey)")
	pubPath := fs.String("pubkey", "", "public key for a .fzm input")
	format := fs.String("format", "", "safetensors or onnx")
	out := fs.String("out", "", "output file")
	if code, done := parseFlags(ctx, fs, args, stdout, stderr, "export", exportAbout, exportExample); done {
		return code
	}
	var err error
	switch {
	case *model == "":
		err = usagef("--model is required")
	case *out == "":
		err = usagef("--out is required")
	case *format != "safetensors" && *format != "onnx":
		err = usagef("--format %q: want safetensors or onnx", *format)
	}
	if err != nil {
		return finish("export", stderr, err)
	}
	return finish("export", stderr, export(*model, *pubPath, *format, *out, stdout))
}

func export(in, pubPath, format, out string, stdout io.Writer) error {
	data, err := boundedfile.Read(in, 1<<30)
	if err != nil {
		return err
	}
	var f *deliver.File
	if bytes.HasPrefix(data, []byte(deliver.Magic)) {
		if pubPath == "" {
			return usagef("%s is a signed device model: give --pubkey", in)
		}
		pub, err := deliver.ReadPublicKeyFile(pubPath)
		if err != nil {
			return err
		}
		if f, err = deliver.Read(data, pub); err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
	} else {
		ck, err := checkpoint.Read(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		m, err := pipeline.FromCheckpoint(ck)
		if err != nil {
			return err
		}
		f = m.File(map[string]string{"source": ck.Header.Model, "source_version": strconv.FormatUint(ck.Header.Version, 10)})
	}
	var b []byte
	if format == "onnx" {
		b, err = deliver.ONNX(f)
	} else {
		b, err = deliver.Safetensors(f)
	}
	if err != nil {
		return err
	}
	if err := writeFileAtomic(out, b); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %d bytes)\n", out, format, len(b))
	return nil
}
