package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/deliver/pipeline"
)

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// finish prints err for command name and returns the exit code: 2 for a
// usageError, 1 for any other error.
func finish(name string, stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "fedzip %s: %s (run 'fedzip %s -h' for help)\n", name, msg, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "fedzip %s: %s\n", name, msg)
	return exitError
}

const compressAbout = `Compresses a float32 model (fedzip model file, e.g. from simulate --save-model)
into a signed device model (.fzm) with a recipe of stages, and prints a table
in the style of Deep Compression: one row per stage, measured on the file.

Recipe: stages separated by ";", each "op=ARG,key:value,...":
  distill=student:mlp:H1-H2,T:4,alpha:0.7,epochs:5   train a smaller student on the teacher's soft targets
  prune=SPARSITY[,scope:layer|global][,fcN:S][,finetune:E][,schedule:cubic|oneshot][,steps:10]
  prune=neurons:FRACTION[,finetune:E]                 remove hidden neurons (structured)
  prune=nm:2:4[,finetune:E]                           N:M sparsity
  cluster=bits:B[,fcN:B][,iters:30][,finetune:E][,clr:1e-4]   k-means weight sharing
  quantize=int8[,calib:minmax|percentile][,pct:99.99] | quantize=f16
  lowrank=rank:R | lowrank=energy:F [,fcN:R][,finetune:E]
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
	var err error
	if *genKey != "" {
		return finish("compress", stderr, writeKeyPair(*genKey, stdout))
	}
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

func writeKeyPair(path string, stdout io.Writer) error {
	pub, priv, err := deliver.GenerateKey()
	if err != nil {
		return err
	}
	pubPath := strings.TrimSuffix(path, ".pem") + ".pub.pem"
	// Never overwrite a key: a lost signing key orphans every device that
	// trusts it.
	if err := writeNew(path, deliver.MarshalPrivateKeyPEM(priv), 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, deliver.MarshalPublicKeyPEM(pub), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "private key: %s\npublic key:  %s\n", path, pubPath)
	return nil
}

func readPrivateKey(path string) (ed25519.PrivateKey, error) { return pipeline.ReadPrivateKey(path) }

func readPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := deliver.ParsePublicKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func compressModel(ctx context.Context, in, out, recipe, keyPath, dataDir string, seed uint64, output string, quiet bool, stdout, stderr io.Writer) error {
	key, err := readPrivateKey(keyPath)
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

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printCompress(w io.Writer, output string, res *pipeline.Result, out string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*pipeline.Result
			Out string `json:"out"`
		}{res, out})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tarch\tnonzero weights\tbits/weight\tindex bits\tbytes\tratio\ttest acc\tΔ points\tlatency µs\tmemory KiB\t")
	for i, r := range res.Rows {
		stage := r.Stage
		if i > 0 {
			stage = "+ " + stage
		}
		idx := "-"
		if r.IndexBits > 0 {
			idx = fmt.Sprintf("%.2f", r.IndexBits)
		}
		delta := "-"
		if i > 0 {
			delta = fmt.Sprintf("%+.2f", r.Delta)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d (%.1f%%)\t%.2f\t%s\t%d\t%.1f×\t%.2f%%\t%s\t%.1f\t%.0f\t\n",
			stage, r.Arch, r.Nonzero, r.NonzeroPct, r.BitsPerWeight, idx, r.Bytes, r.Ratio, 100*r.Accuracy, delta, r.LatencyUS, float64(r.MemoryBytes)/1024)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nwrote %s (%d bytes, %.1f× smaller than the %d bytes of dense float32)\n", out, len(res.File), float64(res.DenseBytes)/float64(len(res.File)), res.DenseBytes)
	return nil
}

const predictAbout = `Verifies a signed device model with a public key and predicts the class of
each input: an IDX images file (MNIST's t10k-images-idx3-ubyte, optionally
gzipped; pixels are scaled by 1/255) or a text file of CSV lines of 784
floats (used as they are).`

const predictExample = `  fedzip predict --model lenet.fzm --pubkey key.pub.pem --input t10k-images-idx3-ubyte.gz --limit 5
  fedzip predict --model lenet.fzm --pubkey key.pub.pem --input digit.csv -o json
`

// prediction is one input's result.
type prediction struct {
	Index int       `json:"index"`
	Class int       `json:"class"`
	Probs []float32 `json:"probabilities"`
	Label *int      `json:"label,omitempty"`
}

func runPredict(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	model := fs.String("model", "", "device model file (.fzm)")
	pubPath := fs.String("pubkey", "", "ed25519 public key that signed the model (PEM)")
	input := fs.String("input", "", "IDX images file or CSV lines of floats")
	labels := fs.String("labels", "", "optional IDX labels file: also print the accuracy")
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
		err = usagef("--input is required")
	case *limit < 0:
		err = usagef("--limit %d: want 0 or more", *limit)
	case *output != "table" && *output != "json":
		err = usagef("-o %q: want table or json", *output)
	}
	if err != nil {
		return finish("predict", stderr, err)
	}
	return finish("predict", stderr, predict(*model, *pubPath, *input, *labels, *limit, *output, stdout))
}

func loadNet(path, pubPath string) (*deliver.Net, error) {
	pub, err := readPublicKey(pubPath)
	if err != nil {
		return nil, err
	}
	data, err := readBounded(path, 64<<20)
	if err != nil {
		return nil, err
	}
	net, err := deliver.Load(data, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return net, nil
}

// readBounded reads a file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, nil
}

func predict(modelPath, pubPath, input, labelsPath string, limit int, output string, stdout io.Writer) error {
	net, err := loadNet(modelPath, pubPath)
	if err != nil {
		return err
	}
	x, n, err := readInputs(input, net.InputDim())
	if err != nil {
		return err
	}
	var y []uint8
	if labelsPath != "" {
		idx, err := dataset.ReadIDXFile(labelsPath)
		if err != nil {
			return err
		}
		if idx.Type != dataset.IDXUint8 || len(idx.Dims) != 1 || idx.Dims[0] != n {
			return fmt.Errorf("%s: want %d ubyte labels", labelsPath, n)
		}
		y = idx.Data
	}
	if limit > 0 {
		n = min(n, limit)
	}
	s := net.NewScratch()
	var preds []prediction
	correct := 0
	for i := 0; i < n; i++ {
		probs := make([]float32, net.Classes())
		c := net.Predict(probs, x[i*net.InputDim():(i+1)*net.InputDim()], s)
		p := prediction{Index: i, Class: c, Probs: probs}
		if y != nil {
			l := int(y[i])
			p.Label = &l
			if l == c {
				correct++
			}
		}
		preds = append(preds, p)
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(preds)
	}
	bw := bufio.NewWriter(stdout)
	for _, p := range preds {
		fmt.Fprintf(bw, "%d\tclass %d\t", p.Index, p.Class)
		for j, q := range p.Probs {
			if j > 0 {
				bw.WriteByte(' ')
			}
			fmt.Fprintf(bw, "%.4f", q)
		}
		if p.Label != nil {
			fmt.Fprintf(bw, "\tlabel %d", *p.Label)
		}
		bw.WriteByte('\n')
	}
	if y != nil && n > 0 {
		fmt.Fprintf(bw, "accuracy %.2f%% (%d of %d)\n", 100*float64(correct)/float64(n), correct, n)
	}
	return bw.Flush()
}

// readInputs reads an IDX images file (by its magic) or CSV lines of dim
// floats, returning the rows and their count.
func readInputs(path string, dim int) ([]float32, int, error) {
	head, err := readBounded(path, 1<<30)
	if err != nil {
		return nil, 0, err
	}
	isGzip := len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b
	isIDX := len(head) >= 4 && head[0] == 0 && head[1] == 0 && head[2] == dataset.IDXUint8
	if isGzip || isIDX {
		idx, err := dataset.ReadIDXFile(path)
		if err != nil {
			return nil, 0, err
		}
		if idx.Type != dataset.IDXUint8 || len(idx.Dims) < 2 {
			return nil, 0, fmt.Errorf("%s: want ubyte images", path)
		}
		n := idx.Dims[0]
		if len(idx.Data) != n*dim {
			return nil, 0, fmt.Errorf("%s: images of %d pixels, the model takes %d", path, len(idx.Data)/max(n, 1), dim)
		}
		x := make([]float32, len(idx.Data))
		for i, b := range idx.Data {
			x[i] = float32(b) / 255
		}
		return x, n, nil
	}
	var x []float32
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(head))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(fields) != dim {
			return nil, 0, fmt.Errorf("%s:%d: %d values, the model takes %d", path, line, len(fields), dim)
		}
		for _, f := range fields {
			v, err := strconv.ParseFloat(f, 32)
			if err != nil {
				return nil, 0, fmt.Errorf("%s:%d: %v", path, line, err)
			}
			x = append(x, float32(v))
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, 0, err
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("%s: no inputs", path)
	}
	return x, n, nil
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
	data, err := readBounded(in, 1<<30)
	if err != nil {
		return err
	}
	var f *deliver.File
	if bytes.HasPrefix(data, []byte(deliver.Magic)) {
		if pubPath == "" {
			return usagef("%s is a signed device model: give --pubkey", in)
		}
		pub, err := readPublicKey(pubPath)
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

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
