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
	if f.Shape != (Shape{}) {
		meta["input_shape"] = fmt.Sprintf("%dx%dx%d", f.Shape.C, f.Shape.H, f.Shape.W)
	}
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
// metadata: a factored layer lists its two factors joined by "*"; other
// operations start with their name and parameters, as in
// "conv(stride=1,pad=2) conv1.weight+conv1.bias:relu", "maxpool(k=2,stride=2)",
// "groupnorm(groups=4,eps=1e-05) gn1.weight+gn1.bias" and "relu".
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
		switch l.Op {
		case OpConv:
			s = fmt.Sprintf("conv(stride=%d,pad=%d) %s", l.Stride, l.Pad, s)
		case OpMaxPool:
			s = fmt.Sprintf("maxpool(k=%d,stride=%d)", l.Kernel, l.Stride)
		case OpGroupNorm:
			s = fmt.Sprintf("groupnorm(groups=%d,eps=%g) %s", l.Groups, l.Eps, s)
		case OpReLU:
			s = "relu"
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
	onnxFloat     = 1
	onnxInt8      = 3
	onnxInt64     = 7
	onnxAttrFloat = 1
	onnxAttrInt   = 2
	onnxAttrInts  = 7
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
	attrF    = 2
	attrI    = 3
	attrInts = 8
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
// form: each weight matrix or conv kernel is an int8 initializer with one
// scale and zero point per output channel (row), turned back into float32
// by DequantizeLinear with axis 0, feeding Gemm (transB=1) or Conv with
// the float32 bias, then Relu where the layer has one. A factored layer is
// two Gemms; a max-pool is MaxPool; a group norm, which opset 13 lacks, is
// Reshape to [N, groups, −1], InstanceNormalization, Reshape back, Mul by
// γ and Add β; an fc layer after a spatial one starts with Flatten. The
// input is "input", [N, in] for a flat file and [N, C, H, W] for a file
// with an input Shape, and the output "logits" [N, classes]. Weights
// stored as int8 per row are exported exactly; others are quantized to
// int8 per row with min/max calibration.
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
	// floats adds a float32 initializer of the dense values of tensor id
	// with the given dims and returns its name.
	floats := func(id int, suffix string, dims []int) string {
		t := &f.Tensors[id]
		v := make([]float32, t.Size())
		t.Dense(v)
		addInit(t.Name+suffix, onnxFloat, dims, float32Bytes(v))
		return t.Name + suffix
	}
	x := onnxInputName
	shape := f.InputShape()
	flat := f.Shape == (Shape{})
	for li, l := range f.Layers {
		name := fmt.Sprintf("layer%d", li+1)
		next, err := f.layerOut(li, l, shape)
		if err != nil {
			return nil, err
		}
		last := li == len(f.Layers)-1
		switch l.Op {
		case OpFC:
			if !flat {
				addNode("Flatten", name+"_flatten", []string{x}, []string{name + "_flatten"}, intAttr("axis", 1))
				x, flat = name+"_flatten", true
			}
			for j := len(l.Weights) - 1; j >= 0; j-- {
				w := dequantized(l.Weights[j])
				in := []string{x, w}
				if j == 0 && l.Bias >= 0 {
					in = append(in, floats(l.Bias, "", f.Tensors[l.Bias].Shape))
				}
				out := fmt.Sprintf("%s_gemm%d", name, len(l.Weights)-j)
				if j == 0 && !l.ReLU && last {
					out = onnxOutputName
				}
				addNode("Gemm", out, in, []string{out}, intAttr("transB", 1))
				x = out
			}
		case OpConv:
			w := &f.Tensors[l.Weights[0]]
			in := []string{x, dequantized(l.Weights[0])}
			if l.Bias >= 0 {
				in = append(in, floats(l.Bias, "", f.Tensors[l.Bias].Shape))
			}
			out := name + "_conv"
			addNode("Conv", out, in, []string{out}, intsAttr("kernel_shape", w.Shape[2], w.Shape[3]),
				intsAttr("strides", l.Stride, l.Stride), intsAttr("pads", l.Pad, l.Pad, l.Pad, l.Pad))
			x = out
		case OpMaxPool:
			out := name + "_maxpool"
			addNode("MaxPool", out, []string{x}, []string{out}, intsAttr("kernel_shape", l.Kernel, l.Kernel), intsAttr("strides", l.Stride, l.Stride))
			x = out
		case OpGroupNorm:
			grouped := name + "_grouped"
			addInit(grouped+"_shape", onnxInt64, []int{3}, int64Bytes(0, int64(l.Groups), -1))
			addNode("Reshape", grouped, []string{x, grouped + "_shape"}, []string{grouped})
			ones, zeros := make([]float32, l.Groups), make([]float32, l.Groups)
			for i := range ones {
				ones[i] = 1
			}
			addInit(name+"_ones", onnxFloat, []int{l.Groups}, float32Bytes(ones))
			addInit(name+"_zeros", onnxFloat, []int{l.Groups}, float32Bytes(zeros))
			norm := name + "_normalized"
			addNode("InstanceNormalization", norm, []string{grouped, name + "_ones", name + "_zeros"}, []string{norm}, floatAttr("epsilon", l.Eps))
			back := name + "_ungrouped"
			addInit(back+"_shape", onnxInt64, []int{4}, int64Bytes(0, int64(shape.C), int64(shape.H), int64(shape.W)))
			addNode("Reshape", back, []string{norm, back + "_shape"}, []string{back})
			dims := []int{shape.C, 1, 1}
			scaled := name + "_scaled"
			addNode("Mul", scaled, []string{back, floats(l.Weights[0], "_per_channel", dims)}, []string{scaled})
			x = name + "_shifted"
			addNode("Add", x, []string{scaled, floats(l.Bias, "_per_channel", dims)}, []string{x})
		}
		if l.ReLU || l.Op == OpReLU {
			out := name + "_relu"
			addNode("Relu", out, []string{x}, []string{out})
			x = out
		}
		shape = next
	}
	if x != onnxOutputName {
		addNode("Identity", onnxOutputName, []string{x}, []string{onnxOutputName})
	}
	g = append(g, nodes...)
	g = append(g, inits...)
	inDims := []int{f.Input}
	if !(f.Shape == (Shape{})) {
		inDims = []int{f.Shape.C, f.Shape.H, f.Shape.W}
	}
	g = protowire.AppendTag(g, graphInput, protowire.BytesType)
	g = protowire.AppendBytes(g, valueInfo(onnxInputName, inDims...))
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

func intsAttr(name string, v ...int) []byte {
	var a []byte
	a = appendStringField(a, attrName, name)
	for _, x := range v {
		a = protowire.AppendTag(a, attrInts, protowire.VarintType)
		a = protowire.AppendVarint(a, uint64(int64(x)))
	}
	a = protowire.AppendTag(a, attrType, protowire.VarintType)
	return protowire.AppendVarint(a, onnxAttrInts)
}

func floatAttr(name string, v float32) []byte {
	var a []byte
	a = appendStringField(a, attrName, name)
	a = protowire.AppendTag(a, attrF, protowire.Fixed32Type)
	a = protowire.AppendFixed32(a, math.Float32bits(v))
	a = protowire.AppendTag(a, attrType, protowire.VarintType)
	return protowire.AppendVarint(a, onnxAttrFloat)
}

func int64Bytes(v ...int64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
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

// valueInfo is a float tensor [N, dims...] with a symbolic batch
// dimension.
func valueInfo(name string, dims ...int) []byte {
	var batch, shape, tt, typ, v []byte
	batch = appendStringField(batch, dimParam, onnxBatchSymbol)
	shape = protowire.AppendTag(shape, shapeDim, protowire.BytesType)
	shape = protowire.AppendBytes(shape, batch)
	for _, dim := range dims {
		var d []byte
		d = protowire.AppendTag(d, dimValue, protowire.VarintType)
		d = protowire.AppendVarint(d, uint64(dim))
		shape = protowire.AppendTag(shape, shapeDim, protowire.BytesType)
		shape = protowire.AppendBytes(shape, d)
	}
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
