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

// TestONNXParsesAndComputes decodes the exported protobuf field by field,
// checks the model header, and runs the graph it describes with a small
// interpreter of the four operators used (DequantizeLinear per axis, Gemm
// with transB, Relu, Identity): the outputs must match the runtime's
// within the error of int8 weights.
func TestONNXParsesAndComputes(t *testing.T) {
	f := testFile(7)
	b, err := ONNX(f)
	if err != nil {
		t.Fatal(err)
	}
	model := parsePB(t, b)
	if model.u(modelIRVersion) != onnxIRVersion {
		t.Fatalf("ir_version %d", model.u(modelIRVersion))
	}
	opset := parsePB(t, model[modelOpsetImport][0].([]byte))
	if opset.str(opsetDomain) != "" || opset.u(opsetVersion) != 13 {
		t.Fatalf("opset %v", opset)
	}
	meta := map[string]string{}
	for _, e := range model[modelMetadataProps] {
		kv := parsePB(t, e.([]byte))
		meta[kv.str(entryKey)] = kv.str(entryValue)
	}
	if meta["model"] != "test" {
		t.Fatalf("metadata %v", meta)
	}
	graph := parsePB(t, model[modelGraph][0].([]byte))
	// Initializers.
	type tensor struct {
		dims  []int
		dtype uint64
		f32   []float32
		i8    []int8
	}
	vals := map[string]*tensor{}
	for _, raw := range graph[graphInitializer] {
		tp := parsePB(t, raw.([]byte))
		tn := &tensor{dtype: tp.u(tensorDataType)}
		size := 1
		for _, d := range tp[tensorDims] {
			tn.dims = append(tn.dims, int(d.(uint64)))
			size *= int(d.(uint64))
		}
		data := tp[tensorRawData][0].([]byte)
		switch tn.dtype {
		case onnxFloat:
			if len(data) != 4*size {
				t.Fatalf("%s: %d bytes for %d floats", tp.str(tensorName), len(data), size)
			}
			for i := 0; i < size; i++ {
				tn.f32 = append(tn.f32, math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
			}
		case onnxInt8:
			if len(data) != size {
				t.Fatalf("%s: %d bytes for %d int8", tp.str(tensorName), len(data), size)
			}
			for _, c := range data {
				tn.i8 = append(tn.i8, int8(c))
			}
		default:
			t.Fatalf("dtype %d", tn.dtype)
		}
		vals[tp.str(tensorName)] = tn
	}
	in := parsePB(t, graph[graphInput][0].([]byte))
	out := parsePB(t, graph[graphOutput][0].([]byte))
	if in.str(valueName) != "input" || out.str(valueName) != "logits" {
		t.Fatalf("input %q output %q", in.str(valueName), out.str(valueName))
	}
	r := rand.New(rand.NewPCG(8, 8))
	const batch = 5
	x := make([]float32, batch*f.Input)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	vals["input"] = &tensor{dims: []int{batch, f.Input}, f32: x}
	var ops []string
	for _, raw := range graph[graphNode] {
		node := parsePB(t, raw.([]byte))
		op := node.str(nodeOpType)
		ops = append(ops, op)
		ins, outs := node.strs(nodeInput), node.strs(nodeOutput)
		attrs := map[string]int64{}
		for _, a := range node[nodeAttribute] {
			ap := parsePB(t, a.([]byte))
			if ap.u(attrType) != onnxAttrInt {
				t.Fatalf("attribute type %d", ap.u(attrType))
			}
			attrs[ap.str(attrName)] = int64(ap.u(attrI))
		}
		for _, s := range ins {
			if vals[s] == nil {
				t.Fatalf("%s reads %q before it is produced", op, s)
			}
		}
		var res *tensor
		switch op {
		case "DequantizeLinear":
			q, s, z := vals[ins[0]], vals[ins[1]], vals[ins[2]]
			if attrs["axis"] != 0 || len(s.f32) != q.dims[0] || len(z.i8) != q.dims[0] {
				t.Fatalf("DequantizeLinear: axis %d, %d scales for %v", attrs["axis"], len(s.f32), q.dims)
			}
			res = &tensor{dims: q.dims}
			cols := len(q.i8) / q.dims[0]
			for i, c := range q.i8 {
				res.f32 = append(res.f32, float32(int32(c)-int32(z.i8[i/cols]))*s.f32[i/cols])
			}
		case "Gemm":
			a, w := vals[ins[0]], vals[ins[1]]
			if attrs["transB"] != 1 || a.dims[1] != w.dims[1] {
				t.Fatalf("Gemm: transB %d, %v·%vᵀ", attrs["transB"], a.dims, w.dims)
			}
			n, k, m := a.dims[0], a.dims[1], w.dims[0]
			res = &tensor{dims: []int{n, m}, f32: make([]float32, n*m)}
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
		case "Relu":
			a := vals[ins[0]]
			res = &tensor{dims: a.dims}
			for _, v := range a.f32 {
				res.f32 = append(res.f32, max(v, 0))
			}
		case "Identity":
			res = vals[ins[0]]
		default:
			t.Fatalf("unexpected operator %s", op)
		}
		vals[outs[0]] = res
	}
	if want := []string{"DequantizeLinear", "Gemm", "Relu", "DequantizeLinear", "Gemm", "DequantizeLinear", "Gemm", "Relu", "DequantizeLinear", "Gemm"}; !slices.Equal(ops, want) {
		t.Fatalf("operators %v, want %v", ops, want)
	}
	logits := vals["logits"]
	if logits == nil || !slices.Equal(logits.dims, []int{batch, f.Classes()}) {
		t.Fatalf("no logits of shape [%d %d]", batch, f.Classes())
	}
	// The reference: the same network with every weight matrix replaced
	// by its int8 per-row codes, run by the runtime.
	g := testFile(7)
	for _, l := range g.Layers {
		for _, id := range l.Weights {
			tn := &g.Tensors[id]
			q, scale, zero := int8PerRow(tn)
			*tn = Tensor{Name: tn.Name, Shape: tn.Shape, Encoding: Int8, Q: q, Scale: scale, Zero: zero}
		}
	}
	net, err := Compile(g)
	if err != nil {
		t.Fatal(err)
	}
	s := net.NewScratch()
	for i := 0; i < batch; i++ {
		want := net.Logits(x[i*f.Input:(i+1)*f.Input], s)
		for j, w := range want {
			got := logits.f32[i*f.Classes()+j]
			if math.Abs(float64(got-w)) > 1e-4*(1+math.Abs(float64(w))) {
				t.Fatalf("example %d logit %d: ONNX graph %v, runtime %v", i, j, got, w)
			}
		}
	}
}

// TestONNXRuntime runs the exported model in ONNX Runtime when it is
// installed for Node.js: set FEDZIP_ORT_NODE_MODULES to a node_modules
// folder holding onnxruntime-node (npm install onnxruntime-node
// --ignore-scripts; the CPU library ships in the package). It compares
// ONNX Runtime's logits with the runtime's on the same int8 weights.
func TestONNXRuntime(t *testing.T) {
	mods := os.Getenv("FEDZIP_ORT_NODE_MODULES")
	node, err := exec.LookPath("node")
	if mods == "" || err != nil {
		t.Skip("set FEDZIP_ORT_NODE_MODULES and install node to run ONNX Runtime")
	}
	f := testFile(9)
	b, err := ONNX(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "m.onnx")
	os.WriteFile(model, b, 0o644)
	const script = `const ort = require('onnxruntime-node');
(async () => {
  const x = JSON.parse(process.argv[3]);
  const s = await ort.InferenceSession.create(process.argv[2]);
  const out = await s.run({input: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, x[0].length])});
  console.log(JSON.stringify(Array.from(out.logits.data)));
})().catch(e => { console.error(e); process.exit(1); });`
	js := filepath.Join(dir, "run.js")
	os.WriteFile(js, []byte(script), 0o644)
	r := rand.New(rand.NewPCG(10, 10))
	x := make([][]float32, 4)
	for i := range x {
		x[i] = make([]float32, f.Input)
		for j := range x[i] {
			x[i][j] = float32(r.NormFloat64())
		}
	}
	arg, _ := json.Marshal(x)
	cmd := exec.Command(node, js, model, string(arg))
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got []float32
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	g := testFile(9)
	for _, l := range g.Layers {
		for _, id := range l.Weights {
			tn := &g.Tensors[id]
			q, scale, zero := int8PerRow(tn)
			*tn = Tensor{Name: tn.Name, Shape: tn.Shape, Encoding: Int8, Q: q, Scale: scale, Zero: zero}
		}
	}
	net, _ := Compile(g)
	s := net.NewScratch()
	for i := range x {
		want := net.Logits(x[i], s)
		for j, w := range want {
			if d := math.Abs(float64(got[i*len(want)+j] - w)); d > 1e-4*(1+math.Abs(float64(w))) {
				t.Fatalf("example %d logit %d: ONNX Runtime %v, runtime %v", i, j, got[i*len(want)+j], w)
			}
		}
	}
}
