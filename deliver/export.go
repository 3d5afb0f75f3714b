package deliver

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fedzip/fedzip/compress"
)

// Safetensors returns the tensors of f decoded to float32 in the
// safetensors format (huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON mapping each tensor name to its dtype
// ("F32"), shape and data_offsets [begin, end) into the data that follows,
// plus "__metadata__" (string to string: f's metadata and the layer
// structure), padded with spaces to a multiple of 8; then the tensors'
// bytes, little-endian, contiguous in file order.
func Safetensors(f *File) ([]byte, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	type entry struct {
		Dtype   string `json:"dtype"`
		Shape   []int  `json:"shape"`
		Offsets [2]int `json:"data_offsets"`
	}
	header := map[string]any{}
	meta := map[string]string{"format": "pt", "layers": layerString(f)}
	for k, v := range f.Meta {
		meta[k] = v
	}
	header["__metadata__"] = meta
	var data []byte
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if _, dup := header[t.Name]; dup || t.Name == "__metadata__" {
			return nil, fmt.Errorf("%w: tensor name %q repeated or reserved", ErrCorrupt, t.Name)
		}
		v := make([]float32, t.Size())
		t.Dense(v)
		begin := len(data)
		for _, x := range v {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(x))
		}
		header[t.Name] = entry{Dtype: "F32", Shape: slices.Clone(t.Shape), Offsets: [2]int{begin, len(data)}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	out = append(out, h...)
	return append(out, data...), nil
}

// layerString describes the layers as "fc1.weight+fc1.bias:relu;..." for
// metadata: a factored layer lists its two factors joined by "*".
func layerString(f *File) string {
	var parts []string
	for _, l := range f.Layers {
		var w []string
		for _, id := range l.Weights {
			w = append(w, f.Tensors[id].Name)
		}
		s := strings.Join(w, "*")
		if l.Bias >= 0 {
			s += "+" + f.Tensors[l.Bias].Name
		}
		if l.ReLU {
			s += ":relu"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ";")
}

// ONNX element types and attribute types (onnx.proto).
const (
	onnxFloat   = 1
	onnxInt8    = 3
	onnxAttrInt = 2
	// ONNXOpset is the operator set the export declares; per-axis
	// DequantizeLinear needs 13 or later.
	ONNXOpset     = 13
	onnxIRVersion = 7 // the IR version of opset 13
)

// Field numbers of onnx.proto used by the export.
const (
	modelIRVersion     = 1
	modelProducerName  = 2
	modelProducerVer   = 3
	modelDocString     = 6
	modelGraph         = 7
	modelOpsetImport   = 8
	modelMetadataProps = 14

	opsetDomain  = 1
	opsetVersion = 2

	graphNode        = 1
	graphName        = 2
	graphInitializer = 5
	graphInput       = 11
	graphOutput      = 12

	nodeInput     = 1
	nodeOutput    = 2
	nodeName      = 3
	nodeOpType    = 4
	nodeAttribute = 5

	attrName = 1
	attrI    = 3
	attrType = 20

	tensorDims     = 1
	tensorDataType = 2
	tensorName     = 8
	tensorRawData  = 9

	valueName = 1
	valueType = 2

	typeTensor      = 1
	tensorElemType  = 1
	tensorShape     = 2
	shapeDim        = 1
	dimValue        = 1
	dimParam        = 2
	entryKey        = 1
	entryValue      = 2
	onnxInputName   = "input"
	onnxOutputName  = "logits"
	onnxBatchSymbol = "N"
)

// ONNX returns the network of f as an ONNX model (IR 7, opset 13) in the QDQ
// form: each weight matrix is an int8 initializer with one scale and zero
// point per output channel (row), turned back into float32 by
// DequantizeLinear with axis 0, feeding Gemm (transB=1) with the float32
// bias, then Relu where the layer has one. A factored layer is two Gemms.
// The input is "input" [N, in] and the output "logits" [N, classes].
// Weights stored as int8 per row are exported exactly; others are
// quantized to int8 per row with min/max calibration.
func ONNX(f *File) ([]byte, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	var g []byte
	g = protowire.AppendTag(g, graphName, protowire.BytesType)
	g = protowire.AppendString(g, "fedzip")
	var nodes, inits []byte
	addNode := func(op, name string, in, out []string, attrs ...[]byte) {
		var n []byte
		for _, s := range in {
			n = appendStringField(n, nodeInput, s)
		}
		for _, s := range out {
			n = appendStringField(n, nodeOutput, s)
		}
		n = appendStringField(n, nodeName, name)
		n = appendStringField(n, nodeOpType, op)
		for _, a := range attrs {
			n = protowire.AppendTag(n, nodeAttribute, protowire.BytesType)
			n = protowire.AppendBytes(n, a)
		}
		nodes = protowire.AppendTag(nodes, graphNode, protowire.BytesType)
		nodes = protowire.AppendBytes(nodes, n)
	}
	addInit := func(name string, dtype int, dims []int, raw []byte) {
		t := onnxTensor(name, dtype, dims, raw)
		inits = protowire.AppendTag(inits, graphInitializer, protowire.BytesType)
		inits = protowire.AppendBytes(inits, t)
	}
	// dequantized returns the name of the float32 weight of tensor id,
	// adding its int8 initializer, scale, zero point and DequantizeLinear.
	dequantized := func(id int) string {
		t := &f.Tensors[id]
		q, scale, zero := int8PerRow(t)
		raw := make([]byte, len(q))
		for i, v := range q {
			raw[i] = byte(v)
		}
		addInit(t.Name+"_quantized", onnxInt8, t.Shape, raw)
		addInit(t.Name+"_scale", onnxFloat, []int{len(scale)}, float32Bytes(scale))
		zraw := make([]byte, len(zero))
		for i, z := range zero {
			zraw[i] = byte(z)
		}
		addInit(t.Name+"_zero_point", onnxInt8, []int{len(zero)}, zraw)
		addNode("DequantizeLinear", t.Name+"_dequantize",
			[]string{t.Name + "_quantized", t.Name + "_scale", t.Name + "_zero_point"}, []string{t.Name},
			intAttr("axis", 0))
		return t.Name
	}
	x := onnxInputName
	for li, l := range f.Layers {
		name := fmt.Sprintf("layer%d", li+1)
		for j := len(l.Weights) - 1; j >= 0; j-- {
			w := dequantized(l.Weights[j])
			in := []string{x, w}
			if j == 0 && l.Bias >= 0 {
				b := &f.Tensors[l.Bias]
				v := make([]float32, b.Size())
				b.Dense(v)
				addInit(b.Name, onnxFloat, b.Shape, float32Bytes(v))
				in = append(in, b.Name)
			}
			out := fmt.Sprintf("%s_gemm%d", name, len(l.Weights)-j)
			if j == 0 && !l.ReLU && li == len(f.Layers)-1 {
				out = onnxOutputName
			}
			addNode("Gemm", out, in, []string{out}, intAttr("transB", 1))
			x = out
		}
		if l.ReLU {
			out := name + "_relu"
			addNode("Relu", out, []string{x}, []string{out})
			x = out
		}
	}
	if x != onnxOutputName {
		addNode("Identity", onnxOutputName, []string{x}, []string{onnxOutputName})
	}
	g = append(g, nodes...)
	g = append(g, inits...)
	g = protowire.AppendTag(g, graphInput, protowire.BytesType)
	g = protowire.AppendBytes(g, valueInfo(onnxInputName, f.Input))
	g = protowire.AppendTag(g, graphOutput, protowire.BytesType)
	g = protowire.AppendBytes(g, valueInfo(onnxOutputName, f.Classes()))

	var m []byte
	m = protowire.AppendTag(m, modelIRVersion, protowire.VarintType)
	m = protowire.AppendVarint(m, onnxIRVersion)
	m = appendStringField(m, modelProducerName, "fedzip")
	m = appendStringField(m, modelProducerVer, "1")
	m = appendStringField(m, modelDocString, "exported by fedzip export; weights int8 per output channel (QDQ)")
	m = protowire.AppendTag(m, modelGraph, protowire.BytesType)
	m = protowire.AppendBytes(m, g)
	var op []byte
	op = appendStringField(op, opsetDomain, "")
	op = protowire.AppendTag(op, opsetVersion, protowire.VarintType)
	op = protowire.AppendVarint(op, ONNXOpset)
	m = protowire.AppendTag(m, modelOpsetImport, protowire.BytesType)
	m = protowire.AppendBytes(m, op)
	keys := make([]string, 0, len(f.Meta))
	for k := range f.Meta {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var e []byte
		e = appendStringField(e, entryKey, k)
		e = appendStringField(e, entryValue, f.Meta[k])
		m = protowire.AppendTag(m, modelMetadataProps, protowire.BytesType)
		m = protowire.AppendBytes(m, e)
	}
	return m, nil
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func intAttr(name string, v int64) []byte {
	var a []byte
	a = appendStringField(a, attrName, name)
	a = protowire.AppendTag(a, attrI, protowire.VarintType)
	a = protowire.AppendVarint(a, uint64(v))
	a = protowire.AppendTag(a, attrType, protowire.VarintType)
	return protowire.AppendVarint(a, onnxAttrInt)
}

func onnxTensor(name string, dtype int, dims []int, raw []byte) []byte {
	var t []byte
	for _, d := range dims {
		t = protowire.AppendTag(t, tensorDims, protowire.VarintType)
		t = protowire.AppendVarint(t, uint64(d))
	}
	t = protowire.AppendTag(t, tensorDataType, protowire.VarintType)
	t = protowire.AppendVarint(t, uint64(dtype))
	t = appendStringField(t, tensorName, name)
	t = protowire.AppendTag(t, tensorRawData, protowire.BytesType)
	return protowire.AppendBytes(t, raw)
}

// valueInfo is a float tensor [N, dim] with a symbolic batch dimension.
func valueInfo(name string, dim int) []byte {
	var batch, d, shape, tt, typ, v []byte
	batch = appendStringField(batch, dimParam, onnxBatchSymbol)
	d = protowire.AppendTag(d, dimValue, protowire.VarintType)
	d = protowire.AppendVarint(d, uint64(dim))
	shape = protowire.AppendTag(shape, shapeDim, protowire.BytesType)
	shape = protowire.AppendBytes(shape, batch)
	shape = protowire.AppendTag(shape, shapeDim, protowire.BytesType)
	shape = protowire.AppendBytes(shape, d)
	tt = protowire.AppendTag(tt, tensorElemType, protowire.VarintType)
	tt = protowire.AppendVarint(tt, onnxFloat)
	tt = protowire.AppendTag(tt, tensorShape, protowire.BytesType)
	tt = protowire.AppendBytes(tt, shape)
	typ = protowire.AppendTag(typ, typeTensor, protowire.BytesType)
	typ = protowire.AppendBytes(typ, tt)
	v = appendStringField(v, valueName, name)
	v = protowire.AppendTag(v, valueType, protowire.BytesType)
	return protowire.AppendBytes(v, typ)
}

func float32Bytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// int8PerRow returns the dense int8 codes of a weight matrix with one scale
// and zero point per row: the stored ones if the tensor is int8 per row,
// else a min/max quantization of its decoded values.
func int8PerRow(t *Tensor) (q []int8, scale []float32, zero []int8) {
	rows := t.Shape[0]
	q = make([]int8, t.Size())
	if t.Encoding == Int8 && len(t.Scale) == rows {
		scale, zero = slices.Clone(t.Scale), slices.Clone(t.Zero)
		cols := t.Size() / rows
		if !t.Sparse {
			copy(q, t.Q)
			return q, scale, zero
		}
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				q[r*cols+c] = zero[r] // the code of zero
			}
		}
		for i, p := range t.Index {
			q[p] = t.Q[i]
		}
		return q, scale, zero
	}
	v := make([]float32, t.Size())
	t.Dense(v)
	lo, hi := make([]float32, rows), make([]float32, rows)
	compress.CalibrateMinMax(lo, hi, v)
	scale, zero = make([]float32, rows), make([]int8, rows)
	compress.AffineParams(scale, zero, lo, hi)
	compress.QuantizeAffine(q, v, scale, zero)
	return q, scale, zero
}
