package deliver

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fedzip/fedzip/nn"
)

func TestSafetensorsLayout(t *testing.T) {
	f := testFile(6)
	b, err := Safetensors(f)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 || 8+n > uint64(len(b)) {
		t.Fatalf("header length %d of a %d-byte file", n, len(b))
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatalf("header is not JSON: %v", err)
	}
	var meta map[string]string
	if err := json.Unmarshal(hdr["__metadata__"], &meta); err != nil || meta["model"] != "test" || meta["layers"] == "" {
		t.Fatalf("metadata %s: %v", hdr["__metadata__"], err)
	}
	data := b[8+n:]
	type entry struct {
		Dtype   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	var spans [][2]int
	for i := range f.Tensors {
		tn := &f.Tensors[i]
		var e entry
		if err := json.Unmarshal(hdr[tn.Name], &e); err != nil {
			t.Fatalf("%s: %v", tn.Name, err)
		}
		if e.Dtype != "F32" || !slices.Equal(e.Shape, tn.Shape) || e.Offsets[1]-e.Offsets[0] != 4*tn.Size() {
			t.Fatalf("%s: %+v", tn.Name, e)
		}
		want := make([]float32, tn.Size())
		tn.Dense(want)
		for j, w := range want {
			got := math.Float32frombits(binary.LittleEndian.Uint32(data[e.Offsets[0]+4*j:]))
			if got != w {
				t.Fatalf("%s[%d] = %v, want %v", tn.Name, j, got, w)
			}
		}
		spans = append(spans, e.Offsets)
	}
	if len(hdr) != len(f.Tensors)+1 {
		t.Fatalf("%d header entries", len(hdr))
	}
	// The buffer is covered exactly, without holes or overlaps.
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	end := 0
	for _, s := range spans {
		if s[0] != end {
			t.Fatalf("gap or overlap at %d", end)
		}
		end = s[1]
	}
	if end != len(data) {
		t.Fatalf("tensors cover %d of %d bytes", end, len(data))
	}
}

// pb is a decoded protobuf message: field number to raw values (varints
// as uint64, length-delimited fields as []byte).
type pb map[protowire.Number][]any

func parsePB(t *testing.T, b []byte) pb {
	t.Helper()
	m := pb{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatal("bad varint")
			}
			m[num] = append(m[num], v)
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				t.Fatal("bad bytes")
			}
			m[num] = append(m[num], v)
			b = b[n:]
		default:
			t.Fatalf("unexpected wire type %d", typ)
		}
	}
	return m
}

func (m pb) str(num protowire.Number) string {
	if len(m[num]) == 0 {
		return ""
	}
	return string(m[num][0].([]byte))
}

func (m pb) strs(num protowire.Number) []string {
	var s []string
	for _, v := range m[num] {
		s = append(s, string(v.([]byte)))
	}
	return s
}

func (m pb) u(num protowire.Number) uint64 {
	if len(m[num]) == 0 {
		return 0
	}
	return m[num][0].(uint64)
}

// onnxTensorVal is a tensor of the test interpreter.
type onnxTensorVal struct {
	dims  []int
	dtype uint64
	f32   []float32
	i8    []int8
	i64   []int64
}

// onnxAttr is a decoded attribute: an int, ints or a float.
type onnxAttr struct {
	i    int64
	ints []int64
	f    float32
}

// parseAttr decodes an AttributeProto of type INT, INTS or FLOAT (the
// float is a fixed32, which parsePB does not read).
func parseAttr(t *testing.T, b []byte) (string, onnxAttr) {
	t.Helper()
	var name string
	var a onnxAttr
	var typ uint64
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal("bad attribute tag")
		}
		b = b[n:]
		switch wt {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			b = b[n:]
			switch num {
			case attrI:
				a.i = int64(v)
			case attrInts:
				a.ints = append(a.ints, int64(v))
			case attrType:
				typ = v
			}
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			b = b[n:]
			a.f = math.Float32frombits(v)
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			b = b[n:]
			if num == attrName {
				name = string(v)
			}
		default:
			t.Fatalf("attribute wire type %d", wt)
		}
	}
	if typ != onnxAttrInt && typ != onnxAttrInts && typ != onnxAttrFloat {
		t.Fatalf("attribute %s of type %d", name, typ)
	}
	return name, a
}

// runONNX decodes an exported model field by field, checks its header,
// input and output, and runs its graph on x with a small interpreter of
// the operators the export uses. It returns the logits and the operators
// in order.
func runONNX(t *testing.T, b []byte, x *onnxTensorVal) (*onnxTensorVal, []string) {
	t.Helper()
	model := parsePB(t, b)
	if model.u(modelIRVersion) != onnxIRVersion {
		t.Fatalf("ir_version %d", model.u(modelIRVersion))
	}
	opset := parsePB(t, model[modelOpsetImport][0].([]byte))
	if opset.str(opsetDomain) != "" || opset.u(opsetVersion) != 13 {
		t.Fatalf("opset %v", opset)
	}
	graph := parsePB(t, model[modelGraph][0].([]byte))
	vals := map[string]*onnxTensorVal{}
	for _, raw := range graph[graphInitializer] {
		tp := parsePB(t, raw.([]byte))
		tn := &onnxTensorVal{dtype: tp.u(tensorDataType)}
		size := 1
		for _, d := range tp[tensorDims] {
			tn.dims = append(tn.dims, int(d.(uint64)))
			size *= int(d.(uint64))
		}
		data := tp[tensorRawData][0].([]byte)
		width := map[uint64]int{onnxFloat: 4, onnxInt8: 1, onnxInt64: 8}[tn.dtype]
		if width == 0 || len(data) != width*size {
			t.Fatalf("%s: %d bytes for %d values of type %d", tp.str(tensorName), len(data), size, tn.dtype)
		}
		for i := 0; i < size; i++ {
			switch tn.dtype {
			case onnxFloat:
				tn.f32 = append(tn.f32, math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
			case onnxInt8:
				tn.i8 = append(tn.i8, int8(data[i]))
			case onnxInt64:
				tn.i64 = append(tn.i64, int64(binary.LittleEndian.Uint64(data[8*i:])))
			}
		}
		vals[tp.str(tensorName)] = tn
	}
	in := parsePB(t, graph[graphInput][0].([]byte))
	out := parsePB(t, graph[graphOutput][0].([]byte))
	if in.str(valueName) != "input" || out.str(valueName) != "logits" {
		t.Fatalf("input %q output %q", in.str(valueName), out.str(valueName))
	}
	// The declared input shape: a batch symbol, then x's dimensions.
	shape := parsePB(t, parsePB(t, parsePB(t, in[valueType][0].([]byte))[typeTensor][0].([]byte))[tensorShape][0].([]byte))
	if len(shape[shapeDim]) != len(x.dims) {
		t.Fatalf("input of rank %d, want %d", len(shape[shapeDim]), len(x.dims))
	}
	for i, d := range shape[shapeDim][1:] {
		if got := parsePB(t, d.([]byte)).u(dimValue); int(got) != x.dims[i+1] {
			t.Fatalf("input dimension %d is %d, want %d", i+1, got, x.dims[i+1])
		}
	}
	vals["input"] = x
	var ops []string
	for _, raw := range graph[graphNode] {
		node := parsePB(t, raw.([]byte))
		op := node.str(nodeOpType)
		ops = append(ops, op)
		ins, outs := node.strs(nodeInput), node.strs(nodeOutput)
		attrs := map[string]onnxAttr{}
		for _, a := range node[nodeAttribute] {
			k, v := parseAttr(t, a.([]byte))
			attrs[k] = v
		}
		for _, s := range ins {
			if vals[s] == nil {
				t.Fatalf("%s reads %q before it is produced", op, s)
			}
		}
		vals[outs[0]] = onnxOp(t, op, ins, vals, attrs)
	}
	logits := vals["logits"]
	if logits == nil {
		t.Fatal("no logits")
	}
	return logits, ops
}

func prod(d []int) int {
	n := 1
	for _, v := range d {
		n *= v
	}
	return n
}

// onnxOp runs one operator of the exported graphs, naively.
func onnxOp(t *testing.T, op string, ins []string, vals map[string]*onnxTensorVal, attrs map[string]onnxAttr) *onnxTensorVal {
	t.Helper()
	a := vals[ins[0]]
	switch op {
	case "DequantizeLinear":
		q, s, z := a, vals[ins[1]], vals[ins[2]]
		if attrs["axis"].i != 0 || len(s.f32) != q.dims[0] || len(z.i8) != q.dims[0] {
			t.Fatalf("DequantizeLinear: axis %d, %d scales for %v", attrs["axis"].i, len(s.f32), q.dims)
		}
		res := &onnxTensorVal{dims: q.dims}
		cols := len(q.i8) / q.dims[0]
		for i, c := range q.i8 {
			res.f32 = append(res.f32, float32(int32(c)-int32(z.i8[i/cols]))*s.f32[i/cols])
		}
		return res
	case "Gemm":
		w := vals[ins[1]]
		if attrs["transB"].i != 1 || len(a.dims) != 2 || a.dims[1] != w.dims[1] {
			t.Fatalf("Gemm: transB %d, %v·%vᵀ", attrs["transB"].i, a.dims, w.dims)
		}
		n, k, m := a.dims[0], a.dims[1], w.dims[0]
		res := &onnxTensorVal{dims: []int{n, m}, f32: make([]float32, n*m)}
		for i := 0; i < n; i++ {
			for j := 0; j < m; j++ {
				var s float64
				for p := 0; p < k; p++ {
					s += float64(a.f32[i*k+p]) * float64(w.f32[j*k+p])
				}
				if len(ins) == 3 {
					s += float64(vals[ins[2]].f32[j])
				}
				res.f32[i*m+j] = float32(s)
			}
		}
		return res
	case "Conv":
		w := vals[ins[1]]
		ks, st, pd := attrs["kernel_shape"].ints, attrs["strides"].ints, attrs["pads"].ints
		if len(a.dims) != 4 || len(w.dims) != 4 || a.dims[1] != w.dims[1] || len(ks) != 2 || int(ks[0]) != w.dims[2] || int(ks[1]) != w.dims[3] ||
			len(st) != 2 || len(pd) != 4 || pd[0] != pd[2] || pd[1] != pd[3] {
			t.Fatalf("Conv: %v * %v, kernel %v, strides %v, pads %v", a.dims, w.dims, ks, st, pd)
		}
		n, c, h, wd := a.dims[0], a.dims[1], a.dims[2], a.dims[3]
		o, kh, kw := w.dims[0], w.dims[2], w.dims[3]
		sy, sx, py, px := int(st[0]), int(st[1]), int(pd[0]), int(pd[1])
		oh, ow := (h+2*py-kh)/sy+1, (wd+2*px-kw)/sx+1
		res := &onnxTensorVal{dims: []int{n, o, oh, ow}, f32: make([]float32, n*o*oh*ow)}
		for b := 0; b < n; b++ {
			for oc := 0; oc < o; oc++ {
				for y := 0; y < oh; y++ {
					for x := 0; x < ow; x++ {
						var s float64
						if len(ins) == 3 {
							s = float64(vals[ins[2]].f32[oc])
						}
						for ic := 0; ic < c; ic++ {
							for ky := 0; ky < kh; ky++ {
								for kx := 0; kx < kw; kx++ {
									iy, ix := y*sy+ky-py, x*sx+kx-px
									if iy < 0 || iy >= h || ix < 0 || ix >= wd {
										continue
									}
									s += float64(a.f32[((b*c+ic)*h+iy)*wd+ix]) * float64(w.f32[((oc*c+ic)*kh+ky)*kw+kx])
								}
							}
						}
						res.f32[((b*o+oc)*oh+y)*ow+x] = float32(s)
					}
				}
			}
		}
		return res
	case "MaxPool":
		ks, st := attrs["kernel_shape"].ints, attrs["strides"].ints
		n, c, h, w := a.dims[0], a.dims[1], a.dims[2], a.dims[3]
		k, s := int(ks[0]), int(st[0])
		if len(ks) != 2 || ks[1] != ks[0] || len(st) != 2 || st[1] != st[0] {
			t.Fatalf("MaxPool: kernel %v strides %v", ks, st)
		}
		oh, ow := (h-k)/s+1, (w-k)/s+1
		res := &onnxTensorVal{dims: []int{n, c, oh, ow}}
		for p := 0; p < n*c; p++ {
			for y := 0; y < oh; y++ {
				for x := 0; x < ow; x++ {
					best := float32(math.Inf(-1))
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							best = max(best, a.f32[(p*h+y*s+ky)*w+x*s+kx])
						}
					}
					res.f32 = append(res.f32, best)
				}
			}
		}
		return res
	case "Flatten":
		if attrs["axis"].i != 1 {
			t.Fatalf("Flatten axis %d", attrs["axis"].i)
		}
		return &onnxTensorVal{dims: []int{a.dims[0], prod(a.dims[1:])}, f32: a.f32}
	case "Reshape":
		var dims []int
		rest := len(a.f32)
		neg := -1
		for i, d := range vals[ins[1]].i64 {
			switch {
			case d == 0:
				dims = append(dims, a.dims[i])
			case d == -1:
				neg = i
				dims = append(dims, 1)
			default:
				dims = append(dims, int(d))
			}
		}
		if neg >= 0 {
			dims[neg] = rest / prod(dims)
		}
		if prod(dims) != rest {
			t.Fatalf("Reshape %v to %v", a.dims, dims)
		}
		return &onnxTensorVal{dims: dims, f32: a.f32}
	case "InstanceNormalization":
		scale, bias := vals[ins[1]].f32, vals[ins[2]].f32
		eps := float64(attrs["epsilon"].f)
		n, c := a.dims[0], a.dims[1]
		size := prod(a.dims[2:])
		res := &onnxTensorVal{dims: a.dims, f32: make([]float32, len(a.f32))}
		for p := 0; p < n*c; p++ {
			xs := a.f32[p*size : (p+1)*size]
			var m, v float64
			for _, x := range xs {
				m += float64(x)
			}
			m /= float64(size)
			for _, x := range xs {
				v += (float64(x) - m) * (float64(x) - m)
			}
			r := 1 / math.Sqrt(v/float64(size)+eps)
			for i, x := range xs {
				res.f32[p*size+i] = float32((float64(x)-m)*r)*scale[p%c] + bias[p%c]
			}
		}
		return res
	case "Mul", "Add":
		// Broadcast a per-channel [C, 1, 1] tensor over [N, C, H, W].
		v := vals[ins[1]]
		if len(a.dims) != 4 || len(v.dims) != 3 || v.dims[0] != a.dims[1] || v.dims[1] != 1 || v.dims[2] != 1 {
			t.Fatalf("%s: %v by %v", op, a.dims, v.dims)
		}
		hw := a.dims[2] * a.dims[3]
		res := &onnxTensorVal{dims: a.dims, f32: make([]float32, len(a.f32))}
		for i, x := range a.f32 {
			c := i / hw % a.dims[1]
			if op == "Mul" {
				res.f32[i] = x * v.f32[c]
			} else {
				res.f32[i] = x + v.f32[c]
			}
		}
		return res
	case "Relu":
		res := &onnxTensorVal{dims: a.dims}
		for _, v := range a.f32 {
			res.f32 = append(res.f32, max(v, 0))
		}
		return res
	case "Identity":
		return a
	}
	t.Fatalf("unexpected operator %s", op)
	return nil
}

// int8File returns f with every weight of its fc and conv layers replaced
// by its int8 per-row codes, as the ONNX export stores them: the network
// the exported graph computes, for the runtime to run.
func int8File(f *File) *File {
	for _, l := range f.Layers {
		if l.Op != OpFC && l.Op != OpConv {
			continue
		}
		for _, id := range l.Weights {
			tn := &f.Tensors[id]
			q, scale, zero := int8PerRow(tn)
			*tn = Tensor{Name: tn.Name, Shape: tn.Shape, Encoding: Int8, Q: q, Scale: scale, Zero: zero}
		}
	}
	return f
}

// convTestFile is a conv net of every layer kind (convSpecs[0]) with
// compressed tensors: sparse int8 kernels and clustered fc weights.
func convTestFile(t testing.TB) *File {
	c := convSpecs[0]
	net, err := nn.ParseNet(c.spec, c.c, c.h, c.w, c.classes)
	if err != nil {
		t.Fatal(err)
	}
	params := make([]float32, net.NumParams())
	net.Init(params, 5)
	return compressTensors(netFile(t, net, params))
}

// TestONNXParsesAndComputes decodes the exported protobuf field by field,
// checks the model header, and runs the graph it describes with a small
// interpreter of the operators used: the outputs must match the runtime's
// within the error of int8 weights, for an MLP and for a conv net.
func TestONNXParsesAndComputes(t *testing.T) {
	cases := []struct {
		name string
		file func() *File
		ops  []string
	}{
		{"mlp", func() *File { return testFile(7) },
			[]string{"DequantizeLinear", "Gemm", "Relu", "DequantizeLinear", "Gemm", "DequantizeLinear", "Gemm", "Relu", "DequantizeLinear", "Gemm"}},
		{"conv", func() *File { return convTestFile(t) },
			[]string{"DequantizeLinear", "Conv", "Relu", "MaxPool", "Reshape", "InstanceNormalization", "Reshape", "Mul", "Add",
				"DequantizeLinear", "Conv", "Relu", "Flatten", "DequantizeLinear", "Gemm"}},
	}
	for _, c := range cases {
		f := c.file()
		b, err := ONNX(f)
		if err != nil {
			t.Fatal(err)
		}
		meta := map[string]string{}
		for _, e := range parsePB(t, b)[modelMetadataProps] {
			kv := parsePB(t, e.([]byte))
			meta[kv.str(entryKey)] = kv.str(entryValue)
		}
		if meta["model"] != f.Meta["model"] {
			t.Fatalf("%s: metadata %v", c.name, meta)
		}
		r := rand.New(rand.NewPCG(8, 8))
		const batch = 5
		x := &onnxTensorVal{dims: []int{batch, f.Input}}
		if f.Shape != (Shape{}) {
			x.dims = []int{batch, f.Shape.C, f.Shape.H, f.Shape.W}
		}
		for i := 0; i < batch*f.Input; i++ {
			x.f32 = append(x.f32, float32(r.NormFloat64()))
		}
		logits, ops := runONNX(t, b, x)
		if !slices.Equal(ops, c.ops) {
			t.Fatalf("%s: operators %v, want %v", c.name, ops, c.ops)
		}
		if !slices.Equal(logits.dims, []int{batch, f.Classes()}) {
			t.Fatalf("%s: logits of shape %v, want [%d %d]", c.name, logits.dims, batch, f.Classes())
		}
		net, err := Compile(int8File(c.file()))
		if err != nil {
			t.Fatal(err)
		}
		s := net.NewScratch()
		for i := 0; i < batch; i++ {
			want := net.Logits(x.f32[i*f.Input:(i+1)*f.Input], s)
			for j, w := range want {
				got := logits.f32[i*f.Classes()+j]
				if math.Abs(float64(got-w)) > 1e-4*(1+math.Abs(float64(w))) {
					t.Fatalf("%s: example %d logit %d: ONNX graph %v, runtime %v", c.name, i, j, got, w)
				}
			}
		}
	}
}

// TestONNXRuntime runs the exported models, an MLP and a conv net, in ONNX
// Runtime when it is installed for Node.js: set FEDZIP_ORT_NODE_MODULES to
// a node_modules folder holding onnxruntime-node (npm install
// onnxruntime-node --ignore-scripts; the CPU library ships in the
// package). It compares ONNX Runtime's logits with the runtime's on the
// same int8 weights.
func TestONNXRuntime(t *testing.T) {
	mods := os.Getenv("FEDZIP_ORT_NODE_MODULES")
	node, err := exec.LookPath("node")
	if mods == "" || err != nil {
		t.Skip("set FEDZIP_ORT_NODE_MODULES and install node to run ONNX Runtime")
	}
	const script = `const ort = require('onnxruntime-node');
(async () => {
  const x = JSON.parse(process.argv[3]);
  const dims = JSON.parse(process.argv[4]);
  const s = await ort.InferenceSession.create(process.argv[2]);
  const out = await s.run({input: new ort.Tensor('float32', Float32Array.from(x.flat()), dims)});
  console.log(JSON.stringify(Array.from(out.logits.data)));
})().catch(e => { console.error(e); process.exit(1); });`
	dir := t.TempDir()
	js := filepath.Join(dir, "run.js")
	os.WriteFile(js, []byte(script), 0o644)
	for name, file := range map[string]func() *File{"mlp": func() *File { return testFile(9) }, "conv": func() *File { return convTestFile(t) }} {
		f := file()
		b, err := ONNX(f)
		if err != nil {
			t.Fatal(err)
		}
		model := filepath.Join(dir, name+".onnx")
		os.WriteFile(model, b, 0o644)
		r := rand.New(rand.NewPCG(10, 10))
		x := make([][]float32, 4)
		dims := []int{len(x), f.Input}
		if f.Shape != (Shape{}) {
			dims = []int{len(x), f.Shape.C, f.Shape.H, f.Shape.W}
		}
		for i := range x {
			x[i] = make([]float32, f.Input)
			for j := range x[i] {
				x[i][j] = float32(r.NormFloat64())
			}
		}
		arg, _ := json.Marshal(x)
		dimArg, _ := json.Marshal(dims)
		cmd := exec.Command(node, js, model, string(arg), string(dimArg))
		cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: node: %v\n%s", name, err, out)
		}
		var got []float32
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v: %s", name, err, out)
		}
		net, err := Compile(int8File(file()))
		if err != nil {
			t.Fatal(err)
		}
		s := net.NewScratch()
		if len(got) != len(x)*net.Classes() {
			t.Fatalf("%s: %d logits from ONNX Runtime, want %d", name, len(got), len(x)*net.Classes())
		}
		for i := range x {
			want := net.Logits(x[i], s)
			for j, w := range want {
				if d := math.Abs(float64(got[i*len(want)+j] - w)); d > 1e-4*(1+math.Abs(float64(w))) {
					t.Fatalf("%s: example %d logit %d: ONNX Runtime %v, runtime %v", name, i, j, got[i*len(want)+j], w)
				}
			}
		}
		t.Logf("%s: ONNX Runtime agrees with the runtime on %d examples", name, len(x))
	}
}
